// The per-rank Prometheus exporter: prometheus-cpp's Exposer (civetweb) serving a registry at
// http://BIND:PORT/metrics.
#pragma once

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "base/status.h"

namespace reid::monitoring {

// "host:port" as civetweb takes it (an IPv6 host in brackets).
std::string ListenAddress(const std::string& bind, int port);

// Serves `registry` on bind:port. A port that cannot be bound (taken, privileged, a bad bind
// address) comes back as an error naming the address and the way out, for the caller to warn.
StatusOr<std::unique_ptr<prometheus::Exposer>> StartExporter(
    const std::string& bind, int port, const std::shared_ptr<prometheus::Registry>& registry);

}  // namespace reid::monitoring
