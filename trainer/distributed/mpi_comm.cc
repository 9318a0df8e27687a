// MPI backend (see mpi_comm.h): helper thread, watchdog, chunking and a ring all-reduce over
// scratch memory allocated once (Open MPI's own all-reduce allocates a fresh temporary buffer per
// call, and first-touch page faults make that 10-25x slower on this machine kind).
#include "trainer/distributed/mpi_comm.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "trainer/distributed/mpi_check.h"
#include "trainer/distributed/ranks.h"

namespace reid::dist {
namespace {

using Clock = std::chrono::steady_clock;

MPI_Datatype ToMpi(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    case DType::kUInt8:
      return MPI_UINT8_T;
    case DType::kFloat16:
    case DType::kBFloat16:
      return MPI_UINT16_T;  // moved as 16-bit words; reduced by RunAllReduce16
  }
  LOG(FATAL) << "unknown dtype";
}

bool Is16BitFloat(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }

// dst[i] = op(dst[i], src[i]) for n elements of type T.
template <typename T>
void ReduceInto(T* dst, const T* src, size_t n, bool max) {
  if (max) {
    for (size_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], src[i]);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] += src[i];
  }
}

void ReduceBytes(void* dst, const void* src, size_t n, DType dtype, ReduceOp op) {
  bool max = op == ReduceOp::kMax;
  switch (dtype) {
    case DType::kFloat32:
      return ReduceInto(static_cast<float*>(dst), static_cast<const float*>(src), n, max);
    case DType::kFloat64:
      return ReduceInto(static_cast<double*>(dst), static_cast<const double*>(src), n, max);
    case DType::kInt32:
      return ReduceInto(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), n, max);
    case DType::kInt64:
      return ReduceInto(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), n, max);
    case DType::kUInt8:
      return ReduceInto(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n, max);
    case DType::kFloat16:
    case DType::kBFloat16:
      break;
  }
  LOG(FATAL) << "ReduceBytes: " << DTypeName(dtype) << " is reduced by RunAllReduce16";
}

void Scale(void* buf, size_t n, DType dtype, double factor) {
  if (dtype == DType::kFloat32) {
    float f = static_cast<float>(factor);
    float* p = static_cast<float*>(buf);
    for (size_t i = 0; i < n; ++i) p[i] *= f;
  } else {
    double* p = static_cast<double*>(buf);
    for (size_t i = 0; i < n; ++i) p[i] *= factor;
  }
}

class MpiWork : public Work {
 public:
  // `help` runs queued operations on the waiting thread (see MpiComm::Help); called only while
  // this work is unfinished, hence while its communicator exists.
  explicit MpiWork(std::function<void(MpiWork*)> help) : help_(std::move(help)) {}
  void Wait() override {
    if (!Done()) help_(this);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  bool Done() override {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  double seconds() const override { return seconds_; }
  void Finish(double seconds) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      seconds_ = seconds;
      done_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  double seconds_ = 0.0;
  std::function<void(MpiWork*)> help_;
};

// What a collective is, for the watchdog's message (formatted only then: this is per call).
struct OpInfo {
  const char* name = "barrier";
  size_t count = 0;  // this rank's elements
  size_t total = 0;  // all ranks' elements (all_gather)
  DType dtype = DType::kUInt8;
  std::string detail;  // "sum", "root 0"
};

std::string Describe(const OpInfo& op) {
  std::ostringstream out;
  out << op.name;
  if (op.count > 0 || op.total > 0) {
    out << " (" << op.count;
    if (op.total > 0) out << " of " << op.total;
    out << " x " << DTypeName(op.dtype) << (op.detail.empty() ? "" : ", ") << op.detail << ")";
  }
  return out.str();
}

struct Task {
  OpInfo what;
  uint64_t seq = 0;
  std::function<void()> fn;
  std::shared_ptr<MpiWork> work;
};

class MpiComm : public RawComm {
 public:
  MpiComm(MPI_Comm comm, const MpiCommOptions& options) : options_(options) {
    REID_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
    REID_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    REID_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    CHECK_GE(options_.chunk_bytes, 64u) << "chunk_bytes too small";
    worker_ = std::thread([this] { WorkerLoop(); });
    if (options_.timeout_s > 0) watchdog_ = std::thread([this] { WatchdogLoop(); });
  }

  ~MpiComm() override {
    // The worker drains the queue first, still under the watchdog: a collective that a peer never
    // joins (this rank unwinding on an error) aborts the job instead of hanging here.
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    worker_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      watchdog_stopping_ = true;
    }
    stop_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    REID_MPI_CHECK(MPI_Comm_free(&comm_));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  std::shared_ptr<Work> AllReduce(void* buf, size_t count, DType dtype, ReduceOp op) override {
    CHECK(op != ReduceOp::kAvg || IsFloating(dtype))
        << "all_reduce avg needs a floating dtype, got " << DTypeName(dtype);
    return Submit(
        {"all_reduce", count, 0, dtype, ReduceOpName(op)},
        [=] { RunAllReduce(buf, count, dtype, op); }, count * DTypeSize(dtype));
  }

  std::shared_ptr<Work> Broadcast(void* buf, size_t count, DType dtype, int root) override {
    CHECK(root >= 0 && root < size_) << "broadcast root " << root << " out of range";
    return Submit(
        {"broadcast", count, 0, dtype, "root " + std::to_string(root)},
        [=] {
          size_t chunk = ChunkElems(dtype);
          char* p = static_cast<char*>(buf);
          for (size_t off = 0; off < count; off += chunk) {
            int n = static_cast<int>(std::min(chunk, count - off));
            REID_MPI_CHECK(MPI_Bcast(p + off * DTypeSize(dtype), n, ToMpi(dtype), root, comm_));
          }
        },
        count * DTypeSize(dtype));
  }

  std::shared_ptr<Work> AllGather(const void* send, size_t count, void* recv,
                                  DType dtype) override {
    return AllGatherV(send, recv, std::vector<size_t>(size_, count), dtype);
  }

  std::shared_ptr<Work> AllGatherV(const void* send, void* recv, const std::vector<size_t>& counts,
                                   DType dtype) override {
    CHECK_EQ(counts.size(), static_cast<size_t>(size_)) << "all_gather_v: one count per rank";
    size_t total = 0;
    for (size_t c : counts) total += c;
    CHECK_LT(total, static_cast<size_t>(INT_MAX))
        << "all_gather of " << total << " elements exceeds MPI's int displacements";
    return Submit(
        {"all_gather", counts[rank_], total, dtype, ""},
        [=] { RunAllGatherV(send, recv, counts, dtype); }, total * DTypeSize(dtype));
  }

  std::shared_ptr<Work> Barrier() override {
    return Submit(OpInfo(), [=] { REID_MPI_CHECK(MPI_Barrier(comm_)); });
  }

 private:
  size_t ChunkElems(DType dtype) const {
    return std::max<size_t>(1, options_.chunk_bytes / DTypeSize(dtype));
  }

  // Queues `fn` for the helper thread. Small operations (<= inline_max_bytes) run at once on
  // the caller's thread when nothing is queued or running: same order, no thread hand-off.
  std::shared_ptr<Work> Submit(OpInfo what, std::function<void()> fn, size_t bytes = 0) {
    auto work = std::make_shared<MpiWork>([this](MpiWork* w) { Help(w); });
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t seq = ++submitted_;
    if (bytes <= options_.inline_max_bytes && queue_.empty() && !running_) {
      StartRunning(what, seq);
      lock.unlock();
      Execute(fn, work.get());
      return work;
    }
    queue_.push_back(Task{std::move(what), seq, std::move(fn), work});
    lock.unlock();
    queue_cv_.notify_one();
    return work;
  }

  // A thread waiting for `work` runs the queued operations itself, in order, while the helper
  // thread is idle: a blocking collective then costs no thread hand-off. Async work nobody waits
  // for yet (GradSync's buckets) stays with the helper thread and overlaps the caller.
  void Help(MpiWork* work) {
    for (;;) {
      Task task;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (running_ || queue_.empty() || work->Done()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
        StartRunning(task.what, task.seq);
      }
      Execute(task.fn, task.work.get());
    }
  }

  void StartRunning(const OpInfo& what, uint64_t seq) {
    running_what_ = what;
    running_seq_ = seq;
    running_since_ = Clock::now();
    running_ = true;
  }

  void Execute(const std::function<void()>& fn, MpiWork* work) {
    auto start = Clock::now();
    fn();
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    bool queued;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
      queued = !queue_.empty();
    }
    if (queued) queue_cv_.notify_one();  // ops queued behind an inline one
    work->Finish(seconds);
  }

  void WorkerLoop() {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        queue_cv_.wait(lock, [&] { return stopping_ || (!queue_.empty() && !running_); });
        if (queue_.empty()) return;  // stopping
        if (running_) continue;      // an inline operation is on the wire
        task = std::move(queue_.front());
        queue_.pop_front();
        StartRunning(task.what, task.seq);
      }
      Execute(task.fn, task.work.get());
    }
  }

  void WatchdogLoop() {
    auto poll = std::chrono::duration<double>(std::min(1.0, options_.timeout_s / 10.0));
    std::unique_lock<std::mutex> lock(mu_);
    while (!watchdog_stopping_) {
      stop_cv_.wait_for(lock, poll);
      if (!running_) continue;
      double age = std::chrono::duration<double>(Clock::now() - running_since_).count();
      if (age < options_.timeout_s) continue;
      std::ostringstream msg;
      msg << "reid dist watchdog: rank " << rank_ << " (of " << size_ << "): collective #"
          << running_seq_ << " " << Describe(running_what_) << " has not finished after " << age
          << " s (dist.timeout_s = " << options_.timeout_s
          << "); another rank is stuck or dead. Aborting the job.";
      LOG(ERROR) << msg.str();
      AbortJob(msg.str(), 3);
    }
  }

  void RunAllReduce(void* buf, size_t count, DType dtype, ReduceOp op) {
    if (Is16BitFloat(dtype)) {
      RunAllReduce16(buf, count, dtype, op);
      return;
    }
    size_t bytes = count * DTypeSize(dtype);
    if (size_ > 1 && count >= static_cast<size_t>(size_) && bytes >= options_.ring_min_bytes) {
      RingAllReduce(buf, count, dtype, op);
      return;  // the ring scales averages itself
    } else if (size_ > 1) {
      MPI_Op mpi_op = op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
      size_t chunk = std::max<size_t>(1, options_.plain_chunk_bytes / DTypeSize(dtype));
      char* p = static_cast<char*>(buf);
      for (size_t off = 0; off < count; off += chunk) {
        int n = static_cast<int>(std::min(chunk, count - off));
        REID_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p + off * DTypeSize(dtype), n, ToMpi(dtype),
                                     mpi_op, comm_));
      }
    }
    if (op == ReduceOp::kAvg && size_ > 1) Scale(buf, count, dtype, 1.0 / size_);
  }

  // float16 / bfloat16 (autocast activations, not gradients: small): every rank's buffer is
  // gathered and reduced in rank order in float32, then rounded once, so every rank gets the
  // same bits and the sum is as exact as float32 makes it (a ring would round at each hop).
  void RunAllReduce16(void* buf, size_t count, DType dtype, ReduceOp op) {
    if (size_ == 1 || count == 0) return;
    std::vector<uint16_t> all(count * size_);
    RunAllGatherV(buf, all.data(), std::vector<size_t>(size_, count), dtype);
    const bool half = dtype == DType::kFloat16;
    auto to_float = [half](uint16_t v) { return half ? HalfToFloat(v) : BFloat16ToFloat(v); };
    uint16_t* out = static_cast<uint16_t*>(buf);
    for (size_t i = 0; i < count; ++i) {
      float acc = to_float(all[i]);
      for (int r = 1; r < size_; ++r) {
        const float v = to_float(all[r * count + i]);
        acc = op == ReduceOp::kMax ? std::max(acc, v) : acc + v;
      }
      if (op == ReduceOp::kAvg) acc /= static_cast<float>(size_);
      out[i] = half ? FloatToHalf(acc) : FloatToBFloat16(acc);
    }
  }

  // Ring all-reduce (reduce-scatter then all-gather) of each piece of at most
  // size * chunk elements; every rank ends with bitwise identical results.
  void RingAllReduce(void* buf, size_t count, DType dtype, ReduceOp op) {
    const size_t es = DTypeSize(dtype);
    const size_t piece = ChunkElems(dtype) * size_;
    const int right = (rank_ + 1) % size_, left = (rank_ + size_ - 1) % size_;
    char* base = static_cast<char*>(buf);
    for (size_t poff = 0; poff < count; poff += piece) {
      size_t n = std::min(piece, count - poff);
      char* p = base + poff * es;
      auto seg_begin = [&](int s) { return n * s / size_; };
      auto seg_len = [&](int s) { return seg_begin(s + 1) - seg_begin(s); };
      size_t max_seg = seg_len(size_ - 1) + 1;
      if (scratch_.size() < max_seg * es) scratch_.resize(max_seg * es);
      for (int k = 0; k < size_ - 1; ++k) {
        int send_s = (rank_ - k + 2 * size_) % size_, recv_s = (rank_ - k - 1 + 2 * size_) % size_;
        SendRecv(p + seg_begin(send_s) * es, seg_len(send_s), right, scratch_.data(),
                 seg_len(recv_s), left, dtype);
        ReduceBytes(p + seg_begin(recv_s) * es, scratch_.data(), seg_len(recv_s), dtype, op);
        // The average's division, fused: only the segment this rank owns, while in cache.
        if (op == ReduceOp::kAvg && k == size_ - 2) {
          Scale(p + seg_begin(recv_s) * es, seg_len(recv_s), dtype, 1.0 / size_);
        }
      }
      for (int k = 0; k < size_ - 1; ++k) {
        int send_s = (rank_ + 1 - k + 2 * size_) % size_, recv_s = (rank_ - k + 2 * size_) % size_;
        SendRecv(p + seg_begin(send_s) * es, seg_len(send_s), right, p + seg_begin(recv_s) * es,
                 seg_len(recv_s), left, dtype);
      }
    }
  }

  // MPI_Sendrecv that waits politely: after a short spin it yields the core at each poll, so a
  // rank whose peer is still computing leaves the CPU to its own backward pass (on machines
  // with fewer cores than threads, a spinning helper thread slows the overlap it exists for).
  void SendRecv(const void* send, size_t send_count, int dest, void* recv, size_t recv_count,
                int source, DType dtype) {
    MPI_Request requests[2];
    REID_MPI_CHECK(MPI_Irecv(recv, static_cast<int>(recv_count), ToMpi(dtype), source, 7, comm_,
                             &requests[0]));
    REID_MPI_CHECK(
        MPI_Isend(send, static_cast<int>(send_count), ToMpi(dtype), dest, 7, comm_, &requests[1]));
    for (int polls = 0;; ++polls) {
      int done = 0;
      REID_MPI_CHECK(MPI_Testall(2, requests, &done, MPI_STATUSES_IGNORE));
      if (done) return;
      if (polls > 100) std::this_thread::yield();
    }
  }

  void RunAllGatherV(const void* send, void* recv, const std::vector<size_t>& counts, DType dtype) {
    const size_t es = DTypeSize(dtype);
    const size_t chunk = ChunkElems(dtype);
    size_t max_count = *std::max_element(counts.begin(), counts.end());
    std::vector<int> piece_counts(size_), displs(size_);
    std::vector<size_t> prefix(size_, 0);
    for (int r = 1; r < size_; ++r) prefix[r] = prefix[r - 1] + counts[r - 1];
    for (size_t off = 0; off < max_count; off += chunk) {
      for (int r = 0; r < size_; ++r) {
        size_t left_r = counts[r] > off ? counts[r] - off : 0;
        piece_counts[r] = static_cast<int>(std::min(chunk, left_r));
        displs[r] = static_cast<int>(prefix[r] + std::min(off, counts[r]));
      }
      const char* s = static_cast<const char*>(send) + std::min(off, counts[rank_]) * es;
      REID_MPI_CHECK(MPI_Allgatherv(s, piece_counts[rank_], ToMpi(dtype), recv, piece_counts.data(),
                                    displs.data(), ToMpi(dtype), comm_));
    }
  }

  MpiCommOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<char> scratch_;  // ring receive buffer, grown once and reused (worker thread only)

  std::mutex mu_;
  std::condition_variable queue_cv_;  // wakes the helper thread
  std::condition_variable stop_cv_;   // wakes the watchdog at shutdown
  std::deque<Task> queue_;
  bool stopping_ = false;           // the worker ends once the queue is empty
  bool watchdog_stopping_ = false;  // set after the worker has ended
  uint64_t submitted_ = 0;
  bool running_ = false;
  OpInfo running_what_;
  uint64_t running_seq_ = 0;
  Clock::time_point running_since_;
  std::thread worker_, watchdog_;
};

}  // namespace

std::unique_ptr<RawComm> MakeMpiComm(MPI_Comm comm, const MpiCommOptions& options) {
  return std::make_unique<MpiComm>(comm, options);
}

}  // namespace reid::dist
