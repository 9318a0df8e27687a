// Pushes a registry to a Prometheus Pushgateway from a background thread, with a bounded wait.
// prometheus-cpp 1.0.1's Gateway (libcurl) sets no timeout and offers no way to set one: a
// gateway whose port accepts connections but never answers would block a push forever. So every
// push runs on the Pusher's own thread; the caller waits at most its timeout and goes on, and a
// thread stuck in such a gateway is left behind (detached) when the Pusher is destroyed.
#pragma once

#include <prometheus/registry.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "base/status.h"

namespace reid::monitoring {

// The pieces of a Pushgateway URL "http[s]://host[:port][/prefix]" as prometheus-cpp's Gateway
// takes them: host with its scheme, and the port followed by any path prefix.
struct PushgatewayAddress {
  std::string host;  // e.g. "http://127.0.0.1"
  std::string port;  // e.g. "9091" (or "9091/prefix")
};
StatusOr<PushgatewayAddress> ParsePushgatewayUrl(const std::string& url);

// A grouping-key value safe in a URL path segment: characters other than [A-Za-z0-9._-]
// become '_' (1.0.1's Gateway does not escape them); never empty.
std::string GroupingKeyValue(const std::string& value);

class Pusher {
 public:
  // A client that pushes `registry` to `url` under the grouping key job=`job`, run=`run` with
  // POST: the group's families of the same names are replaced, the others kept (so a failed
  // run's push leaves the last success's timestamp in place). Nothing is pushed until asked.
  static StatusOr<std::unique_ptr<Pusher>> Start(const std::string& url, const std::string& job,
                                                 const std::string& run,
                                                 std::weak_ptr<prometheus::Registry> registry);
  ~Pusher();
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  // Pushes now and waits at most `timeout`. OK on a 2xx answer; otherwise an error naming the
  // gateway and the HTTP status, the connection error, or the wait that ran out (the push then
  // goes on in the background).
  Status PushAndWait(std::chrono::milliseconds timeout);
  const std::string& url() const { return url_; }

 private:
  struct State;
  Pusher(std::string url, std::shared_ptr<State> state);
  static void Loop(std::shared_ptr<State> state);

  std::string url_;
  std::shared_ptr<State> state_;  // shared with the thread, which may outlive the Pusher
  std::thread thread_;
};

// Text for a Gateway::Push result: "HTTP 200", "connection refused", ...
std::string DescribePushResult(int code);

}  // namespace reid::monitoring
