// The process grid under mpirun (2 and 4 ranks, one node): the layout math, the members of
// every sub-communicator for each shape the world size allows, local ranks, and validation
// errors raised on every rank alike (so no rank is left waiting).
#include "core/cuda_runtime.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sambay {
namespace {

int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// World ranks of the members of `group`, in group-rank order.
std::vector<int> members(MPI_Comm group, int world_rank) {
  const Communicator c = make_communicator(group, CommBackend::mpi, "group");
  std::vector<int64_t> got(c.size, -1);
  int64_t mine = world_rank;
  all_gather(c, &mine, got.data(), 1, DType::i64);
  return std::vector<int>(got.begin(), got.end());
}

TEST(GridLayout, Dp2Tp2PutsTpGroupsOnConsecutiveRanks) {
  const GridShape s = resolve_grid_shape(4, /*tp=*/2, /*cp=*/1);
  EXPECT_EQ(s.dp, 2);
  EXPECT_EQ(s.cp, 1);
  EXPECT_EQ(s.tp, 2);
  // rank: (dp, cp, tp)
  const int want[4][3] = {{0, 0, 0}, {0, 0, 1}, {1, 0, 0}, {1, 0, 1}};
  for (int r = 0; r < 4; ++r) {
    const GridCoords c = grid_coords(r, s);
    EXPECT_EQ(c.dp, want[r][0]) << r;
    EXPECT_EQ(c.cp, want[r][1]) << r;
    EXPECT_EQ(c.tp, want[r][2]) << r;
    EXPECT_EQ(grid_rank(c, s), r);
  }
}

TEST(GridLayout, Dp2Cp2Tp2IsTpFastestThenCp) {
  const GridShape s = resolve_grid_shape(8, 2, 2);
  EXPECT_EQ(s.dp, 2);
  // rank 5 = (dp 1, cp 0, tp 1); rank 6 = (dp 1, cp 1, tp 0).
  EXPECT_EQ(grid_rank({1, 0, 1}, s), 5);
  EXPECT_EQ(grid_rank({1, 1, 0}, s), 6);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(grid_rank(grid_coords(r, s), s), r);
}

TEST(GridLayout, IndivisibleWorldIsRejected) {
  try {
    resolve_grid_shape(6, 4, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("world size 6 is not divisible by tp 4 x cp 1"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(resolve_grid_shape(4, 0, 1), Error);
  EXPECT_THROW(resolve_grid_shape(4, 1, -2), Error);
}

// Placements as the grid sees them: node ids (lowest world rank of each node) and host names.
TEST(GridPlacement, TpGroupsInsideNodesAreAccepted) {
  const std::vector<std::string> two_by_two = {"node1", "node1", "node2", "node2"};
  EXPECT_EQ(tp_placement_error(resolve_grid_shape(4, 2, 1), {0, 0, 2, 2}, two_by_two), "");
  EXPECT_EQ(tp_placement_error(resolve_grid_shape(4, 1, 1), {0, 1, 0, 1}, two_by_two), "");
  EXPECT_EQ(tp_placement_error(resolve_grid_shape(8, 2, 2), {0, 0, 0, 0, 4, 4, 4, 4},
                               {"a", "a", "a", "a", "b", "b", "b", "b"}),
            "");
}

TEST(GridPlacement, TpLargerThanTheRanksOfANodeIsRefusedNamingBoth) {
  const std::string e = tp_placement_error(resolve_grid_shape(4, 4, 1), {0, 0, 2, 2},
                                           {"node1", "node1", "node2", "node2"});
  EXPECT_NE(e.find("tensor-parallel size (tp) 4 is larger than the 2 ranks on node node1 "
                   "(2 nodes of 2 ranks)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("use tp <= 2 or start at least 4 ranks per node"), std::string::npos) << e;
  // Uneven nodes: the smallest one is named.
  const std::string uneven = tp_placement_error(resolve_grid_shape(4, 2, 1), {0, 0, 0, 3},
                                                {"big", "big", "big", "small"});
  EXPECT_NE(uneven.find("tp) 2 is larger than the 1 rank on node small (ranks per node: 3,1)"),
            std::string::npos)
      << uneven;
}

TEST(GridPlacement, TpGroupSplitByTheRankOrderIsRefused) {
  // Three ranks per node: ranks 2 and 3 form a TP group across the two nodes.
  const std::string e = tp_placement_error(resolve_grid_shape(6, 2, 1), {0, 0, 0, 3, 3, 3},
                                           {"n1", "n1", "n1", "n2", "n2", "n2"});
  EXPECT_NE(e.find("the tensor-parallel group of ranks 2-3 spans nodes n1 and n2 (2 nodes of 3 "
                   "ranks): with tp 2 every node needs a multiple of 2 ranks"),
            std::string::npos)
      << e;
  // Round-robin placement (mpirun --map-by node): every TP group is split.
  const std::string rr = tp_placement_error(resolve_grid_shape(4, 2, 1), {0, 1, 0, 1},
                                            {"n1", "n2", "n1", "n2"});
  EXPECT_NE(rr.find("group of ranks 0-1 spans nodes n1 and n2"), std::string::npos) << rr;
}

struct Shape {
  int tp, cp;
};

class Grid : public testing::TestWithParam<Shape> {};

TEST_P(Grid, SubCommunicatorsHoldTheRightRanks) {
  const int n = world_size();
  const Shape p = GetParam();
  if (n % (p.tp * p.cp) != 0) GTEST_SKIP() << "shape does not fit " << n << " ranks";
  const ProcessGrid g = make_process_grid(p.tp, p.cp);
  const GridShape& s = g.shape;
  EXPECT_EQ(s.dp * s.cp * s.tp, n);
  EXPECT_EQ(s.tp, p.tp);
  EXPECT_EQ(s.cp, p.cp);
  const GridCoords& c = g.coords;
  const GridCoords expect = grid_coords(g.world_rank, s);
  EXPECT_EQ(c.dp, expect.dp);
  EXPECT_EQ(c.cp, expect.cp);
  EXPECT_EQ(c.tp, expect.tp);

  std::vector<int> tp, cp, dp, dp_cp;
  for (int t = 0; t < s.tp; ++t) tp.push_back(grid_rank({c.dp, c.cp, t}, s));
  for (int k = 0; k < s.cp; ++k) cp.push_back(grid_rank({c.dp, k, c.tp}, s));
  for (int d = 0; d < s.dp; ++d) dp.push_back(grid_rank({d, c.cp, c.tp}, s));
  for (int d = 0; d < s.dp; ++d)
    for (int k = 0; k < s.cp; ++k) dp_cp.push_back(grid_rank({d, k, c.tp}, s));
  EXPECT_EQ(members(g.tp, g.world_rank), tp);
  EXPECT_EQ(members(g.cp, g.world_rank), cp);
  EXPECT_EQ(members(g.dp, g.world_rank), dp);
  EXPECT_EQ(members(g.dp_cp, g.world_rank), dp_cp);
  std::vector<int> all(n);
  for (int r = 0; r < n; ++r) all[r] = r;
  EXPECT_EQ(members(g.world, g.world_rank), all);

  // One node: the local rank is the world rank.
  EXPECT_EQ(g.local_rank, g.world_rank);
  EXPECT_EQ(g.local_size, n);
  const int gpus = cuda_device_count();
  EXPECT_EQ(g.gpu, gpus > 0 ? g.local_rank % gpus : -1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Grid,
                         testing::Values(Shape{1, 1}, Shape{2, 1}, Shape{1, 2}, Shape{2, 2},
                                         Shape{4, 1}, Shape{1, 4}),
                         [](const testing::TestParamInfo<Shape>& info) {
                           return "tp" + std::to_string(info.param.tp) + "_cp" +
                                  std::to_string(info.param.cp);
                         });

TEST(Grid, Dp2Tp2OnFourRanks) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const ProcessGrid g = make_process_grid(2, 1);
  const std::vector<std::vector<int>> tp_groups = {{0, 1}, {0, 1}, {2, 3}, {2, 3}};
  const std::vector<std::vector<int>> dp_groups = {{0, 2}, {1, 3}, {0, 2}, {1, 3}};
  EXPECT_EQ(members(g.tp, g.world_rank), tp_groups[g.world_rank]);
  EXPECT_EQ(members(g.dp, g.world_rank), dp_groups[g.world_rank]);
  EXPECT_NE(describe(g).find("world 4 = dp 2 x cp 1 x tp 2"), std::string::npos) << describe(g);
}

TEST(Grid, IndivisibleShapeFailsOnEveryRank) {
  const int n = world_size();
  EXPECT_THROW(make_process_grid(n + 1, 1), Error);
  EXPECT_THROW(make_process_grid(1, n + 1), Error);
  // The job goes on: the world still works after the refusals.
  const ProcessGrid g = make_process_grid(1, 1);
  EXPECT_EQ(g.shape.dp, n);
}

}  // namespace
}  // namespace sambay
