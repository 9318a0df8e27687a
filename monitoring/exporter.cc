// The exporter's HTTP server: one thread, one connection at a time, each bounded in time, closed
// after the answer (HTTP/1.0). Enough for Prometheus scraping every few seconds.
#include "monitoring/exporter.h"

#include <netdb.h>
#include <poll.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace reid::monitoring {
namespace {

constexpr int kPollMs = 100;                // how soon the thread sees a stop request
constexpr size_t kMaxRequestBytes = 16384;  // request line + headers
constexpr auto kRequestTimeout = std::chrono::seconds(2);

Status BindError(const std::string& address, int port, const std::string& why) {
  return Status::Internal(
      "cannot serve metrics on " + address + " (" + why +
      "); training goes on without this exporter. Free port " + std::to_string(port) +
      ", or set monitoring.metrics_port_base to another base (port = base + local rank) or to 0 "
      "to turn the exporters off, e.g. --set='monitoring { metrics_port_base: 0 }'");
}

// Writes all of `data`; false when the client went away. MSG_NOSIGNAL: no SIGPIPE.
bool SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 2000) != 1) return false;
    const ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string ListenAddress(const std::string& bind, int port) {
  const bool ipv6 = bind.find(':') != std::string::npos && bind.front() != '[';
  return (ipv6 ? "[" + bind + "]" : bind) + ":" + std::to_string(port);
}

StatusOr<std::unique_ptr<Exporter>> Exporter::Start(const std::string& bind, int port,
                                                    std::weak_ptr<prometheus::Registry> registry) {
  const std::string address = ListenAddress(bind, port);
  std::string host = bind;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0)
    return BindError(address, port, "monitoring.metrics_bind: " + std::string(gai_strerror(rc)));
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  // SO_REUSEADDR: a restarted run rebinds at once although the last scrapes' connections are in
  // TIME_WAIT; a port another process listens on still fails.
  const bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
                  ::bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, 64) == 0;
  const int error = errno;
  freeaddrinfo(found);
  if (!ok) {
    if (fd >= 0) close(fd);
    return BindError(address, port, std::strerror(error));
  }
  return std::unique_ptr<Exporter>(new Exporter(fd, address, std::move(registry)));
}

Exporter::Exporter(int fd, std::string address, std::weak_ptr<prometheus::Registry> registry)
    : fd_(fd), address_(std::move(address)), registry_(std::move(registry)) {
  thread_ = std::thread(&Exporter::Serve, this);
}

Exporter::~Exporter() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

void Exporter::Serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, kPollMs) != 1) continue;
    const int connection = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    Answer(connection);
    close(connection);
  }
}

void Exporter::Answer(int connection) {
  const auto deadline = std::chrono::steady_clock::now() + kRequestTimeout;
  std::string request;
  char buf[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequestBytes) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{connection, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) != 1) return;
    const ssize_t n = recv(connection, buf, sizeof(buf), 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  const bool metrics =
      request.rfind("GET /metrics ", 0) == 0 || request.rfind("GET /metrics?", 0) == 0;
  auto registry = registry_.lock();
  std::string status = "404 Not Found", body = "reid exporter: GET /metrics\n";
  const bool scrape = metrics && registry;
  int64_t index = 0;
  if (scrape) {
    status = "200 OK";
    std::lock_guard<std::mutex> lock(mu_);
    index = ++started_;
  }
  if (scrape) body = prometheus::TextSerializer().Serialize(registry->Collect());
  const bool sent = SendAll(
      connection, "HTTP/1.0 " + status +
                      "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                      "Content-Length: " +
                      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  if (!scrape) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (sent) {
    ++served_;
    last_sent_ = index;
    previous_ = last_;
    last_ = std::chrono::steady_clock::now();
  }
  scraped_.notify_all();
}

int64_t Exporter::scrapes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return served_;
}

bool Exporter::AwaitNextScrape(std::chrono::milliseconds cap) {
  std::unique_lock<std::mutex> lock(mu_);
  if (served_ < 2 || cap.count() <= 0) return false;
  const auto interval = last_ - previous_;
  const auto limit = std::min<std::chrono::steady_clock::duration>(
      cap, 2 * interval + std::chrono::seconds(1));
  // Answers are numbered as they read the registry: the ones numbered after started_ read it
  // after this call.
  const int64_t want = started_ + 1;
  return scraped_.wait_for(lock, limit, [&] { return last_sent_ >= want; });
}

}  // namespace reid::monitoring
