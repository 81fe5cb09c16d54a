#include "util/read_block.h"

namespace storemove {
namespace {

struct ThreadBlock {
  std::unique_ptr<char[]> data;
  bool busy = false;
};
thread_local ThreadBlock t_block;

}  // namespace

ReadBlock::ReadBlock() {
  if (t_block.busy) {
    own_ = std::make_unique_for_overwrite<char[]>(kSize);
    data_ = own_.get();
    return;
  }
  if (!t_block.data) t_block.data = std::make_unique_for_overwrite<char[]>(kSize);
  t_block.busy = true;
  data_ = t_block.data.get();
}

ReadBlock::~ReadBlock() {
  if (!own_) t_block.busy = false;
}

}  // namespace storemove
