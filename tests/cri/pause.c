/* pause: the Pod sandbox's init for the CRI tests (what kubernetes' pause image runs).
 *
 * Compiled at test time with `gcc -static` into the test's pause image; nothing is pulled.
 * It holds the Pod's namespaces open: SIGINT/SIGTERM end it (exit 0, so StopPodSandbox
 * is quick), SIGCHLD reaps every child (with a shared PID namespace it is PID 1 and
 * inherits the other containers' orphans), and otherwise it sleeps in pause().
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_down(int sig) {
	(void)sig;
	_exit(0);
}

static void on_child(int sig) {
	(void)sig;
	int saved = errno;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

static int install(int sig, void (*handler)(int)) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = sig == SIGCHLD ? SA_NOCLDSTOP | SA_RESTART : 0;
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("runproc-test pause 1");
		return 0;
	}
	if (getpid() != 1)
		fputs("pause: warning: not PID 1\n", stderr);
	if (install(SIGINT, on_down) || install(SIGTERM, on_down) || install(SIGCHLD, on_child)) {
		perror("pause: sigaction");
		return 1;
	}
	for (;;)
		pause();
	return 42; /* not reached */
}
