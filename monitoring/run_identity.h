// Who a run is to a shared Prometheus: the `run` label every series of the trainer carries, and
// the ports its exporters take on a node, checked before any of them binds.
#pragma once

#include <functional>
#include <string>

#include "base/status.h"
#include "proto/reid_config.pb.h"

namespace reid::monitoring {

// At most this many bytes in a run label (a longer value is cut).
inline constexpr size_t kMaxRunLabelBytes = 128;

// `value` as a label value that is safe everywhere it goes (PromQL regexes, Grafana variables,
// the Pushgateway's URL path, shell): bytes other than [A-Za-z0-9._-] become '_', cut to
// kMaxRunLabelBytes; "_" when empty.
std::string SanitizeLabelValue(const std::string& value);

// The run label and where it came from, for the log line that names it.
struct RunLabel {
  std::string value;   // sanitised
  std::string source;  // e.g. "name \"market1501 v2\"", "SLURM_JOB_ID", "the output directory"
};

// Looks up an environment variable (getenv-like: nullptr when unset).
using EnvLookup = std::function<const char*(const char*)>;

// The config's `name` when it is not empty; else the SLURM job (SLURM_ARRAY_JOB_ID_TASKID for an
// array task, else SLURM_JOB_ID); else the name of `output_dir` (its last component). Stable
// across a requeue or a resume of the same run. Sanitised with SanitizeLabelValue.
RunLabel ChooseRunLabel(const std::string& config_name, const std::string& output_dir,
                        const EnvLookup& env);

// The exporters of one node take monitoring.metrics_port_base + local rank, local ranks 0 ..
// local_size - 1. InvalidArgument (exit 2, before any port is bound) when that range runs past
// 65535 or covers the port of a service that runs on GPU nodes or in the monitoring stack
// (Prometheus 9090, Pushgateway 9091, Alertmanager 9093-9094, node_exporter 9100,
// dcgm-exporter 9400, slurmctld/slurmd/slurmdbd 6817-6819) or the port of a loopback
// monitoring.pushgateway_url. Ok when the exporters are off (base 0).
Status CheckExporterPorts(const proto::MonitoringConfig& config, int local_size);

}  // namespace reid::monitoring
