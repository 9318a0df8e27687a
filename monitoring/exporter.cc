// Starting the Exposer; civetweb reports a failed bind by throwing from the constructor.
#include "monitoring/exporter.h"

#include <exception>

namespace reid::monitoring {

std::string ListenAddress(const std::string& bind, int port) {
  const bool ipv6 = bind.find(':') != std::string::npos && bind.front() != '[';
  return (ipv6 ? "[" + bind + "]" : bind) + ":" + std::to_string(port);
}

StatusOr<std::unique_ptr<prometheus::Exposer>> StartExporter(
    const std::string& bind, int port, const std::shared_ptr<prometheus::Registry>& registry) {
  const std::string address = ListenAddress(bind, port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return Status::Internal(
        "cannot serve metrics on " + address + " (" + e.what() +
        "); training goes on without this exporter. Free port " + std::to_string(port) +
        ", or set monitoring.metrics_port_base to another base (port = base + local rank) or "
        "to 0 to turn the exporters off, e.g. --set='monitoring { metrics_port_base: 0 }'");
  }
  exposer->RegisterCollectable(registry);
  return exposer;
}

}  // namespace reid::monitoring
