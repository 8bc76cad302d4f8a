// The arguments of the decode step's greedy tail (bf16_gemv.cu: bf16_gemv_greedy_kernel, gemv_greedy_finish_kernel),
// shared by the kernels and their torch binding (w4a16_binding.cpp): plain pointers, so the binding's host compiler
// needs no CUDA types.
#pragma once

namespace edgeprof_greedy {

constexpr int kSlots = 32;  // the head's CTAs spread their atomic max over this many keys (less contention)
constexpr int kPairs = 2;   // mapped [token, step] pairs: one per step the host may have on the device at once

struct Tail {
  unsigned long long* best;  // [kSlots] this step's running maxima of greedy_key(); 0 between steps
  long long* token;          // [1] the step's input token, overwritten with its output
  long long* pos;            // [1] the token's position: history[pos] = output, then pos += 1
  long long* history;        // [max_ctx] outputs by position
  long long max_ctx;
  const void* embed;         // [V, H] bf16: the output's row becomes the next step's input
  void* x0;                  // [H] bf16, 16-byte aligned
  int h_vec;                 // H / 8 (16-byte vectors per row)
  long long* seq;            // [1] steps finished, counted where host != nullptr
  // [kPairs][2] mapped pinned memory (device address), or nullptr: step n writes its output token, then n, into pair
  // n % kPairs, so a step queued behind it (edgeprof/fast/readback.py) cannot overwrite a pair the host has not read
  volatile long long* host;
};

}  // namespace edgeprof_greedy
