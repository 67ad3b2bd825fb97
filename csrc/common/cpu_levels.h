// Where the CPU kernels have paths per x86-64 level (GCC's target_clones and target attributes,
// __builtin_cpu_supports of the levels): with GCC only (clang takes no target_clones of a
// template), and not in a check build for the baseline (PYGEN_CPU_BASELINE). Elsewhere the kernels
// take their one baseline path.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(PYGEN_CPU_BASELINE)
#define PYGEN_X86_LEVELS 1
#else
#define PYGEN_X86_LEVELS 0
#endif
