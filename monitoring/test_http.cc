// Loopback HTTP helpers of the monitoring tests (POSIX sockets, poll-bounded).
#include "monitoring/test_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace reid::monitoring::testing {
namespace {

int BoundSocket(int port, int* bound_port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    throw std::runtime_error("bind: " + std::string(std::strerror(errno)));
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound_port = ntohs(a.sin_port);
  return fd;
}

bool WaitFor(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return poll(&p, 1, static_cast<int>(left.count())) == 1;
}

// Reads an HTTP request or response until the headers and Content-Length bytes of body are in
// (or the peer closes, or the deadline passes).
std::string ReadMessage(int fd, std::chrono::steady_clock::time_point deadline) {
  std::string data;
  char buf[4096];
  bool continued = false;
  for (;;) {
    const size_t head_end = data.find("\r\n\r\n");
    if (head_end != std::string::npos && !continued &&
        data.substr(0, head_end).find("Expect: 100-continue") != std::string::npos) {
      const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";  // libcurl asks for bodies > 1 KiB
      if (write(fd, kContinue, sizeof(kContinue) - 1) < 0) return data;
      continued = true;
    }
    if (head_end != std::string::npos) {
      const size_t cl = data.find("Content-Length: ");
      if (cl != std::string::npos && cl < head_end) {
        const size_t want = head_end + 4 + std::stoul(data.substr(cl + 16));
        if (data.size() >= want) return data;
      } else if (data.rfind("GET", 0) == 0 || data.rfind("DELETE", 0) == 0) {
        return data;
      }
    }
    if (!WaitFor(fd, POLLIN, deadline)) return data;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return data;
    data.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

std::string HttpGet(int port, const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buf[4096];
  while (WaitFor(fd, POLLIN, deadline)) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") != 8 ||
      body == std::string::npos) {
    return "";
  }
  return response.substr(body + 4);
}

SilentListener::SilentListener(int port) {
  fd_ = BoundSocket(port, &port_);
  listen(fd_, 16);
}

SilentListener::~SilentListener() { close(fd_); }

int FreePort() {
  int port = 0;
  close(BoundSocket(0, &port));
  return port;
}

FakePushgateway::FakePushgateway(int status, std::chrono::milliseconds delay)
    : status_(status), delay_(delay) {
  fd_ = BoundSocket(0, &port_);
  listen(fd_, 16);
  thread_ = std::thread(&FakePushgateway::Serve, this);
}

FakePushgateway::~FakePushgateway() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

std::vector<std::string> FakePushgateway::requests() {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

void FakePushgateway::Serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 50) != 1) continue;
    const int c = accept(fd_, nullptr, nullptr);
    if (c < 0) continue;
    const std::string msg =
        ReadMessage(c, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    const size_t line_end = msg.find("\r\n");
    const size_t head_end = msg.find("\r\n\r\n");
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(msg.substr(0, line_end) + "\n\n" +
                          (head_end == std::string::npos ? "" : msg.substr(head_end + 4)));
    }
    const auto until = std::chrono::steady_clock::now() + delay_;
    while (!stop_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string response = "HTTP/1.1 " + std::to_string(status_) +
                                 " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if (write(c, response.data(), response.size()) < 0) { /* the client gave up */
    }
    close(c);
  }
}

}  // namespace reid::monitoring::testing
