// Pusher: prometheus-cpp's Gateway driven by one background thread (see pusher.h for why).
#include "monitoring/pusher.h"

#include <glog/logging.h>
#include <prometheus/gateway.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>

namespace reid::monitoring {
namespace {

bool IsSuccess(int code) { return code >= 200 && code < 300; }

std::string Seconds(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", ms.count() / 1000.0);
  return buf;
}

}  // namespace

StatusOr<PushgatewayAddress> ParsePushgatewayUrl(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("monitoring.pushgateway_url \"" + url + "\": " + why);
  };
  const size_t sep = url.find("://");
  const std::string scheme = sep == std::string::npos ? "" : url.substr(0, sep);
  if (scheme != "http" && scheme != "https") return bad("must start with http:// or https://");
  if (url.find_first_of("?#@ \t\r\n") != std::string::npos) {
    return bad("no query, fragment, credentials or spaces");
  }
  const std::string rest = url.substr(sep + 3);
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  std::string host = authority, port = scheme == "https" ? "443" : "80";
  const size_t bracket = authority.rfind(']');
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
        std::stoi(port) > 65535) {
      return bad("the port must be a number in [1, 65535]");
    }
  }
  if (host.empty()) return bad("no host");
  return PushgatewayAddress{scheme + "://" + host, port + path};
}

std::string GroupingKeyValue(const std::string& value) {
  std::string out;
  for (char c : value) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
    out += safe ? c : '_';
  }
  return out.empty() ? "_" : out;
}

std::string DescribePushResult(int code) {
  if (code >= 100) return "HTTP " + std::to_string(code);
  switch (-code) {  // libcurl's CURLcode, negated by the Gateway
    case 6:
      return "cannot resolve the host";
    case 7:
      return "cannot connect (connection refused or no route)";
    case 28:
      return "timed out";
    case 52:
      return "empty reply";
    case 55:
      return "send failed";
    case 56:
      return "receive failed (connection reset)";
    default:
      return "libcurl error " + std::to_string(-code);
  }
}

struct Pusher::State {
  State(const PushgatewayAddress& address, const std::string& job, const std::string& run)
      : gateway(address.host, address.port, GroupingKeyValue(job),
                {{"run", GroupingKeyValue(run)}}) {}
  prometheus::Gateway gateway;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t requested = 0, completed = 0;  // pushes asked for / answered
  int last_code = 0;
  bool stop = false, exited = false;
};

StatusOr<std::unique_ptr<Pusher>> Pusher::Start(const std::string& url, const std::string& job,
                                                const std::string& run,
                                                std::weak_ptr<prometheus::Registry> registry) {
  StatusOr<PushgatewayAddress> address = ParsePushgatewayUrl(url);
  if (!address.ok()) return address.status();
  std::shared_ptr<State> state;
  try {
    state = std::make_shared<State>(*address, job, run);
  } catch (const std::exception& e) {  // libcurl could not initialise
    return Status::Internal("Pushgateway client for " + url + ": " + e.what());
  }
  state->gateway.RegisterCollectable(registry);
  return std::unique_ptr<Pusher>(new Pusher(url, std::move(state)));
}

Pusher::Pusher(std::string url, std::shared_ptr<State> state)
    : url_(std::move(url)), state_(std::move(state)), thread_(&Pusher::Loop, state_) {}

Pusher::~Pusher() {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->stop = true;
  state_->cv.notify_all();
  const bool exited =
      state_->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return state_->exited; });
  lock.unlock();
  if (exited) {
    thread_.join();
  } else {  // stuck in a push to a gateway that does not answer: leave it (it owns its state)
    LOG(INFO) << "monitoring: a push to " << url_ << " is still pending; not waiting for it";
    thread_.detach();
  }
}

void Pusher::Loop(std::shared_ptr<State> s) {
  std::unique_lock<std::mutex> lock(s->mu);
  while (!s->stop) {
    s->cv.wait(lock, [&] { return s->stop || s->requested > s->completed; });
    if (s->stop) break;
    const uint64_t ticket = s->requested;
    lock.unlock();
    const int code = s->gateway.Push();  // POST (prometheus-cpp 1.0.1)
    lock.lock();
    s->completed = ticket;
    s->last_code = code;
    s->cv.notify_all();
  }
  s->exited = true;
  s->cv.notify_all();
}

Status Pusher::PushAndWait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  const uint64_t ticket = ++state_->requested;
  state_->cv.notify_all();
  if (!state_->cv.wait_for(lock, timeout, [&] { return state_->completed >= ticket; })) {
    return Status::Internal("the Pushgateway at " + url_ + " did not answer within " +
                            Seconds(timeout) + " (the push goes on in the background)");
  }
  if (IsSuccess(state_->last_code)) return Status::Ok();
  return Status::Internal("push to the Pushgateway at " + url_ +
                          " failed: " + DescribePushResult(state_->last_code));
}

}  // namespace reid::monitoring
