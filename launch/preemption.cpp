#include "launch/preemption.h"

#include <pthread.h>

#include <csignal>

namespace sambay {

namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_preemption_signal(int sig) { g_signal = sig; }

}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_preemption_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // interrupted reads and writes continue
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A launcher may start us with these signals blocked; one that is already pending (sent
  // before this process could handle it) is then delivered, and recorded, right here.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int preemption_signal() { return g_signal; }

}  // namespace sambay
