// The MPI communicator against hand-computed results, run with 2 and 4 ranks: all-reduce
// (sum, max; in place and not), reduce-scatter, all-gather, broadcast from every root,
// send/recv around a ring, barrier, for every dtype and for counts from 0 to past 64K; and
// the bucketed reduce-scatter / all-gather of the data-parallel code on totals that do not
// divide by the rank count (padded last bucket).
#include "core/cuda_runtime.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <thread>

namespace sambay {
namespace {

// Rank r's value at element i: small integers in [-5, 5], so every sum over up to 4 ranks is
// exact in every dtype (bf16 included) and results can be compared exactly; the rank holding
// the maximum changes from element to element.
double value(int r, int64_t i) { return double((r * 7 + i * 3) % 11) - 5; }

std::vector<char> pack(DType t, const std::vector<double>& v) {
  std::vector<char> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    char* p = out.data() + i * dtype_size(t);
    switch (t) {
      case DType::f32:
        *reinterpret_cast<float*>(p) = float(v[i]);
        break;
      case DType::f64:
        *reinterpret_cast<double*>(p) = v[i];
        break;
      case DType::bf16:
        *reinterpret_cast<bf16*>(p) = to_bf16(float(v[i]));
        break;
      case DType::i32:
        *reinterpret_cast<int32_t*>(p) = int32_t(v[i]);
        break;
      case DType::i64:
        *reinterpret_cast<int64_t*>(p) = int64_t(v[i]);
        break;
    }
  }
  return out;
}

std::vector<double> unpack(DType t, const char* p, int64_t n) {
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i, p += dtype_size(t)) {
    switch (t) {
      case DType::f32:
        out[i] = *reinterpret_cast<const float*>(p);
        break;
      case DType::f64:
        out[i] = *reinterpret_cast<const double*>(p);
        break;
      case DType::bf16:
        out[i] = to_float(*reinterpret_cast<const bf16*>(p));
        break;
      case DType::i32:
        out[i] = *reinterpret_cast<const int32_t*>(p);
        break;
      case DType::i64:
        out[i] = double(*reinterpret_cast<const int64_t*>(p));
        break;
    }
  }
  return out;
}

// Exact comparison; reports the number of mismatches and the first one.
void expect_equal(const std::vector<double>& got, const std::vector<double>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ == 0) first = int64_t(i);
  EXPECT_EQ(bad, 0) << what << ": " << bad << " wrong elements; first at " << first << ": got "
                    << got[first] << ", want " << want[first];
}

double reduce(ReduceOp op, int ranks, int64_t i) {
  double acc = value(0, i);
  for (int r = 1; r < ranks; ++r)
    acc = op == ReduceOp::sum ? acc + value(r, i) : std::max(acc, value(r, i));
  return acc;
}

std::vector<double> values(int r, int64_t begin, int64_t n) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = value(r, begin + i);
  return v;
}

const char* type_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::bf16:
      return "bf16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
  }
  return "?";
}
const char* op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "max"; }

struct Case {
  DType type;
  int64_t count;
};

class Collectives : public testing::TestWithParam<Case> {
 protected:
  Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::mpi, "world");
  DType t = GetParam().type;
  int64_t n = GetParam().count;
  size_t es = dtype_size(GetParam().type);
};

TEST_P(Collectives, AllReduce) {
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max})
    for (bool in_place : {false, true}) {
      std::vector<char> send = pack(t, values(c.rank, 0, n));
      std::vector<char> out(n * es, 0);
      char* recv = in_place ? send.data() : out.data();
      all_reduce(c, send.data(), recv, n, t, op);
      std::vector<double> want(n);
      for (int64_t i = 0; i < n; ++i) want[i] = reduce(op, c.size, i);
      expect_equal(unpack(t, recv, n), want,
                   fmt::format("all_reduce {} {}", op_name(op), in_place ? "in place" : ""));
    }
}

TEST_P(Collectives, ReduceScatter) {
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max})
    for (bool in_place : {false, true}) {
      std::vector<char> send = pack(t, values(c.rank, 0, c.size * n));
      std::vector<char> out(n * es, 0);
      char* recv = in_place ? send.data() + c.rank * n * es : out.data();
      reduce_scatter(c, send.data(), recv, n, t, op);
      std::vector<double> want(n);
      for (int64_t i = 0; i < n; ++i) want[i] = reduce(op, c.size, c.rank * n + i);
      expect_equal(unpack(t, recv, n), want,
                   fmt::format("reduce_scatter {} {}", op_name(op), in_place ? "in place" : ""));
    }
}

TEST_P(Collectives, AllGather) {
  for (bool in_place : {false, true}) {
    const std::vector<char> mine = pack(t, values(c.rank, 0, n));
    std::vector<char> recv(c.size * n * es, 0);
    const char* send = mine.data();
    if (in_place) {
      std::copy(mine.begin(), mine.end(), recv.begin() + c.rank * n * es);
      send = recv.data() + c.rank * n * es;
    }
    all_gather(c, send, recv.data(), n, t);
    std::vector<double> want;
    for (int q = 0; q < c.size; ++q) {
      std::vector<double> v = values(q, 0, n);
      want.insert(want.end(), v.begin(), v.end());
    }
    expect_equal(unpack(t, recv.data(), c.size * n), want,
                 fmt::format("all_gather {}", in_place ? "in place" : ""));
  }
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < c.size; ++root) {
    std::vector<char> buf =
        c.rank == root ? pack(t, values(root, 0, n)) : std::vector<char>(n * es, 0);
    broadcast(c, buf.data(), n, t, root);
    expect_equal(unpack(t, buf.data(), n), values(root, 0, n), fmt::format("root {}", root));
  }
}

TEST_P(Collectives, SendRecvAroundARing) {
  // Even ranks send first and odd ranks receive first, so blocking sends cannot deadlock.
  const int next = (c.rank + 1) % c.size, prev = (c.rank + c.size - 1) % c.size;
  const std::vector<char> mine = pack(t, values(c.rank, 0, n));
  std::vector<char> got(n * es, 0);
  if (c.rank % 2 == 0) {
    send(c, mine.data(), n, t, next);
    recv(c, got.data(), n, t, prev);
  } else {
    recv(c, got.data(), n, t, prev);
    send(c, mine.data(), n, t, next);
  }
  expect_equal(unpack(t, got.data(), n), values(prev, 0, n), "from the previous rank");
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64})
    for (int64_t n : {0, 1, 7, 1000, 65537}) out.push_back({t, n});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Types, Collectives, testing::ValuesIn(cases()),
                         [](const testing::TestParamInfo<Case>& info) {
                           return fmt::format("{}_n{}", type_name(info.param.type),
                                              info.param.count);
                         });

TEST(Communicator, ScalarAllReduce) {
  const Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::mpi, "world");
  const double n = c.size;
  EXPECT_EQ(all_reduce_scalar(c, c.rank + 0.5), n * (n - 1) / 2 + 0.5 * n);
  EXPECT_EQ(all_reduce_scalar(c, c.rank == 1 ? 7.25 : -1.0, ReduceOp::max), 7.25);
}

TEST(Communicator, BarrierWaitsForTheLastRank) {
  const Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::mpi, "world");
  barrier(c);
  const auto t0 = std::chrono::steady_clock::now();
  if (c.rank == c.size - 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  barrier(c);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.25) << "rank " << c.rank << " left the barrier before the last rank came";
}

TEST(Communicator, BadArgumentsThrowOnEveryRankNamingTheGroup) {
  const Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::mpi, "world");
  float x = 0;
  try {
    broadcast(c, &x, 1, DType::f32, c.size);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group 'world'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("outside the group"), std::string::npos) << e.what();
  }
  EXPECT_THROW(reduce_scatter(c, &x, &x, int64_t(INT_MAX) + 1, DType::f32, ReduceOp::sum), Error);
  if (!built_with_cuda()) {  // the nccl backend says it is not built in
    EXPECT_THROW(make_communicator(MPI_COMM_WORLD, CommBackend::nccl, "gpu"), Error);
  }
}

// The bucketed reduce-scatter of data_parallel.h on totals that do not divide by the rank
// count: every owned value is the sum over ranks, padding positions of the shard are zero,
// and the all-gather brings every value back to every rank.
TEST(BucketedCollectives, UnevenTotalsArePadded) {
  const Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::mpi, "world");
  for (int64_t total : {1, 5, 7, 13, 1001})
    for (int64_t bucket : {1, 3, 8, 4096}) {
      const std::string what = fmt::format("total {} bucket {}", total, bucket);
      const ShardLayout s = make_shard_layout(total, bucket, c.size, c.rank);
      const std::vector<double> mine = values(c.rank, 0, total);
      std::vector<double> shard(s.shard_size, -99.0), staging;
      reduce_scatter_buckets(c, s, mine.data(), shard.data(), staging);
      std::vector<double> want(s.shard_size, 0.0);
      for (const ShardBucket& b : s.buckets) {
        const FlatRange own = owned_range(s, b, c.rank);
        for (int64_t i = own.begin; i < own.end; ++i)
          want[b.shard_offset + (i - own.begin)] = reduce(ReduceOp::sum, c.size, i);
      }
      expect_equal(shard, want, what + " reduce-scatter");

      // Gather: each rank's owned values are its shard; everything else starts as garbage.
      std::vector<double> full(total, -99.0);
      for (const ShardBucket& b : s.buckets) {
        const FlatRange own = owned_range(s, b, c.rank);
        for (int64_t i = own.begin; i < own.end; ++i)
          full[i] = shard[b.shard_offset + i - own.begin];
      }
      all_gather_buckets(c, s, full.data(), staging);
      std::vector<double> all(total);
      for (int64_t i = 0; i < total; ++i) all[i] = reduce(ReduceOp::sum, c.size, i);
      expect_equal(full, all, what + " all-gather");
    }
}

}  // namespace
}  // namespace sambay
