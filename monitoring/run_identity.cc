// The run label and the exporters' port range.
#include "monitoring/run_identity.h"

#include <algorithm>
#include <string>

#include "monitoring/pusher.h"

namespace reid::monitoring {
namespace {

// Ports of what shares a GPU node or the monitoring stack with the trainer (Prometheus' default
// port allocations and the SLURM daemons' defaults).
struct ReservedPort {
  int port;
  const char* owner;
};
constexpr ReservedPort kReserved[] = {
    {6817, "slurmctld"},
    {6818, "slurmd"},
    {6819, "slurmdbd"},
    {9090, "Prometheus"},
    {9091, "the Pushgateway"},
    {9093, "Alertmanager"},
    {9094, "Alertmanager's cluster port"},
    {9100, "node_exporter"},
    {9400, "NVIDIA dcgm-exporter"},
};

bool IsLoopbackUrl(const PushgatewayAddress& a) {
  const std::string host = a.host.substr(a.host.find("://") + 3);
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]";
}

std::string Range(int first, int last) {
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

}  // namespace

std::string SanitizeLabelValue(const std::string& value) {
  std::string out;
  for (char c : value.substr(0, kMaxRunLabelBytes)) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
    out += safe ? c : '_';
  }
  return out.empty() ? "_" : out;
}

RunLabel ChooseRunLabel(const std::string& config_name, const std::string& output_dir,
                        const EnvLookup& env) {
  RunLabel label;
  auto set = [&](const std::string& raw, const std::string& source) {
    label.value = SanitizeLabelValue(raw);
    label.source = source;
    return label;
  };
  if (!config_name.empty()) return set(config_name, "name \"" + config_name + "\"");
  const char* array_job = env("SLURM_ARRAY_JOB_ID");
  const char* array_task = env("SLURM_ARRAY_TASK_ID");
  if (array_job != nullptr && *array_job != '\0' && array_task != nullptr && *array_task != '\0') {
    return set(std::string(array_job) + "_" + array_task,
               "SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID (config name empty)");
  }
  const char* job = env("SLURM_JOB_ID");
  if (job != nullptr && *job != '\0') return set(job, "SLURM_JOB_ID (config name empty)");
  std::string dir = output_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  if (slash != std::string::npos && slash + 1 < dir.size()) dir = dir.substr(slash + 1);
  return set(dir, "the output directory's name (config name empty, not a SLURM job)");
}

Status CheckExporterPorts(const proto::MonitoringConfig& config, int local_size) {
  const int base = config.metrics_port_base();
  if (base <= 0) return Status::Ok();
  const int ranks = std::max(1, local_size);
  const int last = base + ranks - 1;
  const std::string what = "monitoring.metrics_port_base = " + std::to_string(base) + ": the " +
                           std::to_string(ranks) + " rank(s) on this node would serve metrics on " +
                           Range(base, last);
  const std::string way_out =
      "; choose a base whose range (base .. base + ranks per node - 1) is free, e.g. the default "
      "19400, or 0 to turn the exporters off";
  if (last > 65535) return Status::InvalidArgument(what + ", past port 65535" + way_out);
  for (const ReservedPort& r : kReserved) {
    if (r.port >= base && r.port <= last) {
      return Status::InvalidArgument(what + ", which covers port " + std::to_string(r.port) +
                                     " of " + r.owner + way_out);
    }
  }
  if (!config.pushgateway_url().empty()) {
    StatusOr<PushgatewayAddress> gateway = ParsePushgatewayUrl(config.pushgateway_url());
    if (gateway.ok() && IsLoopbackUrl(*gateway)) {
      const int port = std::atoi(gateway->port.c_str());  // "9091" or "9091/prefix"
      if (port >= base && port <= last) {
        return Status::InvalidArgument(what + ", which covers port " + std::to_string(port) +
                                       " of monitoring.pushgateway_url" + way_out);
      }
    }
  }
  return Status::Ok();
}

}  // namespace reid::monitoring
