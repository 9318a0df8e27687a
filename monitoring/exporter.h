// The per-rank Prometheus exporter: a registry in the text format at http://BIND:PORT/metrics.
// A small HTTP/1.0 server on one std::thread rather than prometheus-cpp's Exposer: civetweb (the
// Exposer's server) starts its threads with a fixed 100 KiB stack (Debian's build), and glibc
// refuses such a thread in a process whose static TLS is larger, which LibTorch + OpenBLAS + glog
// make it (122 KiB measured): the Exposer fails with "Cannot create threads" inside `reid train`.
#pragma once

#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "base/status.h"

namespace reid::monitoring {

// "host:port" as printed (an IPv6 host in brackets).
std::string ListenAddress(const std::string& bind, int port);

class Exporter {
 public:
  // Serves `registry` on bind:port (bind: a numeric address or a host name). A port that cannot
  // be bound (taken, privileged, a bad address) comes back as an error naming the address and
  // the way out, for the caller to warn.
  static StatusOr<std::unique_ptr<Exporter>> Start(const std::string& bind, int port,
                                                   std::weak_ptr<prometheus::Registry> registry);
  // Stops serving (within ~0.1 s) and closes the port.
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  const std::string& address() const { return address_; }

 private:
  Exporter(int fd, std::string address, std::weak_ptr<prometheus::Registry> registry);
  void Serve();
  // Answers one connection: GET /metrics -> 200 with the registry, anything else -> 404.
  void Answer(int connection);

  int fd_;
  std::string address_;
  std::weak_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace reid::monitoring
