#pragma once
// Child processes for the demo and the integration tests: start with output to a log file,
// stop with SIGTERM then SIGKILL.
#include <string>
#include <sys/types.h>
#include <vector>

namespace haca::app {

struct child_process {
  std::string name;
  pid_t pid = -1;
  std::string log_path;
};

// Runs `program args...` with stdout and stderr appended to log_path. Throws on failure.
// The child gets SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG), so a
// killed demo, test or bench leaves no nodes behind: call it from a thread that outlives
// the child (every caller uses its main thread).
child_process start_process(const std::string& name, const std::string& program, const std::vector<std::string>& args,
                            const std::string& log_path);
bool running(child_process& c);          // reaps it when it has exited
void kill_hard(child_process& c);        // SIGKILL, as a crash would
// SIGTERM, then SIGKILL after grace_ms; returns the exit status (or -signal).
int stop_process(child_process& c, int grace_ms = 5000);
std::string tail_file(const std::string& path, std::size_t max_bytes = 2000);
std::string self_executable();
// A TCP port on 127.0.0.1 that the kernel picks, released at once (a child binds it next).
// Throws when there is none.
int free_port();

} // namespace haca::app
