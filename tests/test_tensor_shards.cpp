// Reshard-ready reading: global tensors written as 2 or 4 pieces over several rank files (as
// tensor- or data-parallel ranks would write them), read back under other slicings: every
// slice along every dimension, arbitrary boxes, bf16 pieces, and h5py's view of the index's
// virtual datasets. Damaged or inconsistent pieces are reported naming the rank file.
#include "core/bf16.h"
#include "io/tensor_shards.h"
#include "tests/io_test_util.h"

#include <cstring>
#include <random>

namespace sambay {
namespace {

using testing::ScratchDir;
using testing::expect_error;
using testing::read_bytes;
using testing::write_bytes;

// A global tensor's values (row-major) and how it is split into pieces over rank files.
struct Sharded {
  GlobalTensor tensor;
  std::vector<float> values;
};

std::vector<float> box_values(const Sharded& s, const Box& b) {
  const size_t nd = s.tensor.shape.size();
  std::vector<float> out;
  std::vector<int64_t> idx(b.offset);
  if (b.numel() == 0) return out;
  while (true) {
    int64_t flat = 0;
    for (size_t d = 0; d < nd; ++d) flat = flat * s.tensor.shape[d] + idx[d];
    out.push_back(s.values[flat]);
    int d = static_cast<int>(nd) - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < b.offset[d] + b.shape[d]) break;
      idx[d] = b.offset[d];
    }
    if (d < 0) return out;
  }
}

// Splits `shape` along `dim` at the cut points, piece k going to rank file k (or rank k % files).
Sharded make_sharded(const std::string& path, std::vector<int64_t> shape, int dim,
                     const std::vector<int64_t>& cuts, StoredDType dtype, uint32_t seed) {
  Sharded s;
  s.tensor = {path, dtype, shape, {}};
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < n; ++i) {
    float x = normal(rng);
    if (dtype == StoredDType::bf16) x = to_float(to_bf16(x));  // values a bf16 store keeps exactly
    s.values.push_back(x);
  }
  for (size_t k = 0; k + 1 < cuts.size(); ++k)
    s.tensor.pieces.push_back({fmt::format("rank_{:05}.h5", k),
                               slice_box(shape, dim, cuts[k], cuts[k + 1] - cuts[k])});
  return s;
}

// Writes every piece into its rank file and the index with one virtual dataset per tensor.
void write_all(const std::string& dir, const std::vector<Sharded>& tensors, int files) {
  std::vector<std::unique_ptr<ShardFileWriter>> writers;
  for (int r = 0; r < files; ++r)
    writers.push_back(std::make_unique<ShardFileWriter>(fmt::format("{}/rank_{:05}.h5", dir, r)));
  std::vector<GlobalTensor> index;
  for (const Sharded& s : tensors) {
    for (const ShardPiece& p : s.tensor.pieces) {
      const int r = std::stoi(p.file.substr(5, 5));
      const std::vector<float> v = box_values(s, p.box);
      if (s.tensor.dtype == StoredDType::f32) {
        writers[r]->write_f32(s.tensor.path, s.tensor.shape, p.box, v.data());
      } else {
        std::vector<uint16_t> bits;
        for (float x : v) bits.push_back(to_bf16(x).bits);
        writers[r]->write_bf16(s.tensor.path, s.tensor.shape, p.box, bits.data());
      }
    }
    index.push_back(s.tensor);
  }
  for (auto& w : writers) w->finish();
  h5::Id f = h5::create_file(dir + "/index.h5");
  write_virtual_tensors(f, index, dir + "/index.h5");
  h5::close_file(f, dir + "/index.h5");
}

std::vector<GlobalTensor> read_index(const std::string& dir) {
  h5::Id f = h5::open_file(dir + "/index.h5");
  return read_virtual_tensors(f, dir + "/index.h5");
}

struct Fixture {
  ScratchDir dir;
  std::vector<Sharded> tensors = {
      // Rows split unevenly over 2 ranks (e.g. a data-parallel optimizer shard).
      make_sharded("model/a/weight", {6, 10}, 0, {0, 4, 6}, StoredDType::f32, 1),
      // Columns split over 4 ranks (a row-parallel projection under TP = 4).
      make_sharded("model/b/weight", {8, 12}, 1, {0, 3, 6, 9, 12}, StoredDType::f32, 2),
      // bf16 pieces.
      make_sharded("model/c/weight", {5, 7}, 1, {0, 3, 7}, StoredDType::bf16, 3),
      // Three dimensions, split along the last.
      make_sharded("optim/m/d", {4, 3, 5}, 2, {0, 2, 5}, StoredDType::f32, 4),
  };
  Fixture() { write_all(dir.path.string(), tensors, 4); }
};

TEST(TensorShards, TheIndexListsEveryPieceAsWritten) {
  Fixture fx;
  const std::vector<GlobalTensor> index = read_index(fx.dir.path.string());
  ASSERT_EQ(index.size(), fx.tensors.size());
  for (const Sharded& s : fx.tensors) {
    const GlobalTensor* t = nullptr;
    for (const GlobalTensor& g : index)
      if (g.path == s.tensor.path) t = &g;
    ASSERT_NE(t, nullptr) << s.tensor.path;
    EXPECT_EQ(t->dtype, s.tensor.dtype);
    EXPECT_EQ(t->shape, s.tensor.shape);
    ASSERT_EQ(t->pieces.size(), s.tensor.pieces.size());
    for (size_t k = 0; k < t->pieces.size(); ++k) {
      EXPECT_EQ(t->pieces[k].file, s.tensor.pieces[k].file);
      EXPECT_EQ(t->pieces[k].box, s.tensor.pieces[k].box);
    }
  }
}

TEST(TensorShards, EverySliceAlongEveryDimensionReadsBackExactly) {
  Fixture fx;
  const std::vector<GlobalTensor> index = read_index(fx.dir.path.string());
  ShardReader reader(fx.dir.path.string());
  int slices = 0;
  for (const Sharded& s : fx.tensors) {
    const GlobalTensor& t = *std::find_if(index.begin(), index.end(),
                                          [&](const GlobalTensor& g) { return g.path == s.tensor.path; });
    for (int dim = 0; dim < static_cast<int>(t.shape.size()); ++dim)
      for (int64_t off = 0; off < t.shape[dim]; ++off)
        for (int64_t size = 1; off + size <= t.shape[dim]; ++size) {
          const Box b = slice_box(t.shape, dim, off, size);
          std::vector<float> got(b.numel(), -1.0f);
          reader.read_slice(t, dim, off, size, got.data());
          const std::vector<float> want = box_values(s, b);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0)
              << t.path << " dim " << dim << " [" << off << ", " << off + size << ")";
          ++slices;
        }
    // Boxes cut along several dimensions at once.
    std::mt19937 rng(9);
    for (int i = 0; i < 50; ++i) {
      Box b;
      for (int64_t extent : t.shape) {
        const int64_t lo = rng() % extent, hi = lo + 1 + rng() % (extent - lo);
        b.offset.push_back(lo);
        b.shape.push_back(hi - lo);
      }
      std::vector<float> got(b.numel());
      reader.read_box(t, b, got.data());
      const std::vector<float> want = box_values(s, b);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << t.path;
    }
  }
  EXPECT_EQ(slices, 264);  // sum over tensors and dimensions of n (n + 1) / 2
}

TEST(TensorShards, ADamagedPieceFailsOnlyTheReadsThatTouchIt) {
  Fixture fx;
  const std::string dir = fx.dir.path.string();
  const Sharded& a = fx.tensors[0];  // rows [0, 4) in rank 0, [4, 6) in rank 1
  const std::vector<float> rank1 = box_values(a, a.tensor.pieces[1].box);
  std::vector<uint8_t> bytes = read_bytes(dir + "/rank_00001.h5");
  auto at = std::search(bytes.begin(), bytes.end(), reinterpret_cast<const uint8_t*>(rank1.data()),
                        reinterpret_cast<const uint8_t*>(rank1.data()) + 16);
  ASSERT_NE(at, bytes.end());
  at[2] ^= 0x01;
  write_bytes(dir + "/rank_00001.h5", bytes);

  const GlobalTensor t = read_index(dir)[0];
  ASSERT_EQ(t.path, "model/a/weight");
  ShardReader reader(dir);
  std::vector<float> rows(3 * 10);
  reader.read_slice(t, 0, 0, 3, rows.data());  // rank 0 only
  EXPECT_EQ(std::memcmp(rows.data(), a.values.data(), rows.size() * 4), 0);
  expect_error([&] { reader.read_slice(t, 0, 3, 3, rows.data()); },
               {dir + "/rank_00001.h5:model/a/weight", "crc32c"});
  expect_error([&] { reader.read_slice(t, 1, 0, 1, rows.data()); }, {"rank_00001.h5", "corrupt"});
}

TEST(TensorShards, InconsistentPiecesAreRefused) {
  ScratchDir dir;
  const std::string d = dir.path.string();
  // The index says rows [0, 3) and [3, 6) but rank 1 wrote its piece at rows [2, 5).
  Sharded s = make_sharded("t", {6, 4}, 0, {0, 3, 6}, StoredDType::f32, 7);
  {
    ShardFileWriter w0(d + "/rank_00000.h5"), w1(d + "/rank_00001.h5");
    const std::vector<float> v0 = box_values(s, s.tensor.pieces[0].box);
    w0.write_f32("t", s.tensor.shape, s.tensor.pieces[0].box, v0.data());
    const Box wrong = slice_box(s.tensor.shape, 0, 2, 3);
    const std::vector<float> v1 = box_values(s, wrong);
    w1.write_f32("t", s.tensor.shape, wrong, v1.data());
    w0.finish();
    w1.finish();
    h5::Id f = h5::create_file(d + "/index.h5");
    write_virtual_tensors(f, {s.tensor}, d + "/index.h5");
    h5::close_file(f, d + "/index.h5");
  }
  ShardReader reader(d);
  std::vector<float> all(24);
  expect_error([&] { reader.read_box(read_index(d)[0], {{0, 0}, {6, 4}}, all.data()); },
               {d + "/rank_00001.h5:t", "global_offset [2, 0] but the index says [3, 0]"});

  // Index mappings that overlap or leave a gap are refused when the index is read.
  for (const auto& cuts : {std::vector<std::pair<int64_t, int64_t>>{{0, 4}, {3, 3}},
                           std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {4, 2}}}) {
    GlobalTensor bad{"u", StoredDType::f32, {6, 4}, {}};
    for (size_t k = 0; k < cuts.size(); ++k)
      bad.pieces.push_back({fmt::format("rank_{:05}.h5", k), slice_box({6, 4}, 0, cuts[k].first, cuts[k].second)});
    h5::Id f = h5::create_file(d + "/bad.h5");
    write_virtual_tensors(f, {bad}, d + "/bad.h5");
    h5::close_file(f, d + "/bad.h5");
    h5::Id g = h5::open_file(d + "/bad.h5");
    expect_error([&] { read_virtual_tensors(g, d + "/bad.h5"); },
                 {d + "/bad.h5:u", cuts[1].first == 3 ? "overlap" : "cover 20 of 24"});
  }
  expect_error([&] { reader.read_slice(read_index(d)[0], 0, 4, 3, all.data()); }, {"outside"});
  expect_error([&] { reader.read_slice(read_index(d)[0], 2, 0, 1, all.data()); }, {"dimension 2"});
}

TEST(TensorShards, H5pyShowsEachGlobalTensorWhole) {
  Fixture fx;
  const std::string script = fmt::format(R"(
import h5py, numpy as np
f = h5py.File('{}/index.h5', 'r')
for name in ['model/a/weight', 'model/b/weight', 'optim/m/d']:
    d = f[name]
    print(name, *d.shape, *['%08x' % b for b in d[...].astype(np.float32).view(np.uint32).ravel()])
c = f['model/c/weight']
print('bf16', c.dtype.kind, c.dtype.itemsize, *['%08x' % b for b in c.astype(np.float32)[...].view(np.uint32).ravel()])
)",
                                         fx.dir.path.string());
  const std::string py = fx.dir.file("check.py"), out = fx.dir.file("out.txt");
  write_bytes(py, std::vector<uint8_t>(script.begin(), script.end()));
  const int rc = std::system(fmt::format("cd / && '{}' '{}' > '{}' 2>&1", SAMBAY_PYTHON3, py, out).c_str());
  const std::vector<uint8_t> text = read_bytes(out);
  const std::string got(text.begin(), text.end());
  ASSERT_EQ(rc, 0) << "python3 with h5py failed (scripts/setup.sh installs python3-h5py):\n" << got;
  std::string want;
  for (size_t i : {0, 1, 3}) {
    const Sharded& s = fx.tensors[i];
    want += s.tensor.path;
    for (int64_t d : s.tensor.shape) want += fmt::format(" {}", d);
    for (float x : s.values) {
      uint32_t u;
      std::memcpy(&u, &x, 4);
      want += fmt::format(" {:08x}", u);
    }
    want += "\n";
  }
  want += "bf16 f 4";  // h5py presents the bfloat16 type as float32, exactly
  for (float x : fx.tensors[2].values) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    want += fmt::format(" {:08x}", u);
  }
  EXPECT_EQ(got, want + "\n");
}

}  // namespace
}  // namespace sambay
