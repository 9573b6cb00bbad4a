// Child processes (app/process.hpp) do not outlive what started them: a demo, test run or
// bench killed with SIGKILL leaves no coordinator or node behind to reconnect for ever.
#include <csignal>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include "app/process.hpp"
#include "harness.hpp"

using namespace haca;

namespace {

// Gone, or a zombie nobody has reaped yet: either way it runs no more.
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0)
    return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  stat >> pid_field >> comm >> state;
  return state != "Z" && state != "X";
}

} // namespace

TEST_CASE("process: a child started by start_process stops when its parent is killed with SIGKILL") {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const auto log = (std::filesystem::temp_directory_path() / test::unique_id("orphan")).string() + ".log";
  const pid_t parent = ::fork();
  REQUIRE(parent >= 0);
  if (parent == 0) { // the parent to be killed: starts a long sleeper, says its pid, waits
    ::close(pipe_fds[0]);
    auto child = app::start_process("sleeper", "/bin/sleep", {"60"}, log);
    (void)!::write(pipe_fds[1], &child.pid, sizeof child.pid);
    ::pause();
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  pid_t child = -1;
  REQUIRE(::read(pipe_fds[0], &child, sizeof child) == static_cast<ssize_t>(sizeof child));
  ::close(pipe_fds[0]);
  REQUIRE(child > 0);
  CHECK(alive(child));

  ::kill(parent, SIGKILL);
  ::waitpid(parent, nullptr, 0);
  const bool stopped = test::eventually([&] { return !alive(child); }, std::chrono::seconds(2));
  CHECK_MESSAGE(stopped, "the child " << child << " outlived its parent");
  if (!stopped)
    ::kill(child, SIGKILL);
  std::filesystem::remove(log);
}
