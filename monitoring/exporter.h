// The per-rank Prometheus exporter: a registry in the text format at http://BIND:PORT/metrics.
// A small HTTP/1.0 server on one std::thread rather than prometheus-cpp's Exposer: civetweb (the
// Exposer's server) starts its threads with a fixed 100 KiB stack (Debian's build), and glibc
// refuses such a thread in a process whose static TLS is larger, which LibTorch + OpenBLAS + glog
// make it (122 KiB measured): the Exposer fails with "Cannot create threads" inside `reid train`.
#pragma once

#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
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

  // At the end of a run: waits for one scrape that reads the registry after this call, so that
  // the last values (the final step, the outcome) reach the scraper. Waits only when scraped at
  // least twice already (someone scrapes regularly), and at most two of those scrapes' intervals
  // plus 1 s, and at most `cap`. True when such a scrape was served.
  bool AwaitNextScrape(std::chrono::milliseconds cap);
  // /metrics answers served so far.
  int64_t scrapes() const;

 private:
  Exporter(int fd, std::string address, std::weak_ptr<prometheus::Registry> registry);
  void Serve();
  // Answers one connection: GET /metrics -> 200 with the registry, anything else -> 404.
  void Answer(int connection);

  int fd_;
  std::string address_;
  std::weak_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;  // guards the scrape bookkeeping below
  std::condition_variable scraped_;
  int64_t started_ = 0;    // /metrics answers begun (each numbered as it reads the registry)
  int64_t served_ = 0;     // ... and sent in full
  int64_t last_sent_ = 0;  // the number of the last one sent in full
  std::chrono::steady_clock::time_point last_, previous_;  // when the last two were sent
  std::thread thread_;
};

}  // namespace reid::monitoring
