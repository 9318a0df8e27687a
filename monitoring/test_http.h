// Loopback HTTP helpers of the monitoring tests: a GET client, a socket that listens and never
// answers (a blackholed port, or a port taken by someone else) and a one-thread fake
// Pushgateway that records the requests it receives.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace reid::monitoring::testing {

// The body of GET http://127.0.0.1:port/path, or "" on any failure (bounded by timeout).
std::string HttpGet(int port, const std::string& path,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

// A TCP socket on 127.0.0.1 that listens but never accepts: connections complete in the kernel
// and then nothing answers. Port 0 = any free port.
class SilentListener {
 public:
  explicit SilentListener(int port = 0);
  ~SilentListener();
  int port() const { return port_; }

 private:
  int fd_ = -1, port_ = 0;
};

// A port that was free a moment ago.
int FreePort();

// Answers every request with `status` (after `delay`) and records "METHOD PATH\n\nBODY".
class FakePushgateway {
 public:
  explicit FakePushgateway(int status = 200,
                           std::chrono::milliseconds delay = std::chrono::milliseconds(0));
  ~FakePushgateway();
  int port() const { return port_; }
  std::vector<std::string> requests();

 private:
  void Serve();
  int fd_ = -1, port_ = 0, status_;
  std::chrono::milliseconds delay_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

}  // namespace reid::monitoring::testing
