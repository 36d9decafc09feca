// Preemption: Slurm sends SIGUSR1 (with --signal=USR1@<seconds>) or SIGTERM before it stops a
// job. The handlers only set a flag; the trainer checks it after every step, finishes that step,
// writes a checkpoint and exits with kExitRequeue, which a batch script answers with
// `scontrol requeue` (the resumed run continues bit-exactly with --resume auto). The handlers
// are installed before anything else (before MPI_Init, which takes a noticeable time), so a
// signal during startup is never fatal: it is acted on, with exit kExitRequeue, before the
// first step.
#pragma once

namespace sambay {

// EX_TEMPFAIL from sysexits.h: "try again later". Distinct from success (0), errors (2, 3) and
// deaths by signal (128 + n).
constexpr int kExitRequeue = 75;

// Installs the SIGUSR1 and SIGTERM handlers and unblocks both signals (idempotent).
void install_preemption_handlers();

// The signal that asked to stop (SIGUSR1 or SIGTERM), or 0.
int preemption_signal();

}  // namespace sambay
