#include "app/process.hpp"

#include <chrono>
#include <csignal>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace haca::app {

child_process start_process(const std::string& name, const std::string& program, const std::vector<std::string>& args,
                            const std::string& log_path) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error("cannot open log file " + log_path);
  std::vector<std::string> argv_store{program};
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_store)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setpgid(0, 0); // its own process group: a Ctrl-C reaches the parent, which stops it in order
    // ... and a parent killed outright (SIGKILL) still stops it; one gone before this line
    // is seen by its pid changing.
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent)
      ::_exit(126);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fd);
  return {name, pid, log_path};
}

bool running(child_process& c) {
  if (c.pid <= 0)
    return false;
  int st = 0;
  if (::waitpid(c.pid, &st, WNOHANG) == c.pid) {
    c.pid = -1;
    return false;
  }
  return true;
}

void kill_hard(child_process& c) {
  if (c.pid > 0) {
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
    c.pid = -1;
  }
}

int stop_process(child_process& c, int grace_ms) {
  if (c.pid <= 0)
    return 0;
  ::kill(c.pid, SIGTERM);
  int st = 0;
  for (int waited = 0; waited < grace_ms; waited += 20) {
    if (::waitpid(c.pid, &st, WNOHANG) == c.pid) {
      c.pid = -1;
      return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(c.pid, SIGKILL);
  ::waitpid(c.pid, &st, 0);
  c.pid = -1;
  return -SIGKILL;
}

std::string tail_file(const std::string& path, std::size_t max_bytes) {
  std::ifstream f{path, std::ios::binary};
  std::stringstream ss;
  ss << f.rdbuf();
  auto s = ss.str();
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

std::string self_executable() {
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "haca";
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool found = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  if (fd >= 0)
    ::close(fd);
  if (!found)
    throw std::runtime_error(std::string("cannot find a free TCP port: ") + std::strerror(err));
  return ntohs(addr.sin_port);
}

} // namespace haca::app
