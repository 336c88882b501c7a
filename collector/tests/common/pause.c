/* The sandbox ("pause") process of the pods the tests make through
 * containerd: holds the pod's namespaces until SIGTERM or SIGINT, and reaps
 * any child it inherits as the pod's PID 1. Built statically, it is the
 * whole root filesystem of the locally made sandbox image, since no
 * registry can be reached. */
#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig) {
  (void)sig;
  stopping = 1;
}

static void on_child(int sig) { (void)sig; }

int main(void) {
  struct sigaction action = {0};
  sigset_t blocked, waiting;

  action.sa_handler = on_stop;
  sigaction(SIGTERM, &action, 0);
  sigaction(SIGINT, &action, 0);
  action.sa_handler = on_child;
  sigaction(SIGCHLD, &action, 0);
  /* Blocked except inside sigsuspend, so a signal arriving between the
   * check of `stopping` and the wait is not lost. */
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGCHLD);
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGCHLD);
  while (!stopping) {
    sigsuspend(&waiting);
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
  }
  return 0;
}
