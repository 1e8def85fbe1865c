/*
 * lessl-agent: the main process of a warm container. It runs the commands lessl sends it over
 * one byte stream (fd 0 in, fd 1 out: the container's attach stream), so a warm task costs a
 * fork and an exec, not Docker API round trips. It is PID 1: it reaps every zombie.
 *
 * Frames, both ways: type (1 byte), run (u32, big-endian), length (u32, big-endian), payload.
 *   in   'R' run:   NUL-terminated strings: uid, gid, cwd, argc, argv..., envc, env...
 *        'I' stdin: bytes for the run's stdin;  'E': its stdin ends
 *        'K' kill:  1 byte, the signal, sent to the run's process group
 *   out  'S' started: u32 pid;  'O' stdout bytes;  'e' stderr bytes
 *        'X' exit: i32, the exit code, or 128 + the signal that ended it (after all its output)
 * Output is read only as fast as fd 1 takes it (back-pressure reaches the command's pipes);
 * stdin is written without blocking (what the command has not read yet waits here).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RUNS 256
#define MAX_FRAME (1u << 20)

struct run {
  uint32_t id;
  pid_t pid;
  int out, err, in; /* pipe ends, -1 when closed */
  int status;       /* set once reaped */
  int reaped;
  char *pending;    /* stdin not written yet */
  size_t pending_len;
  int stdin_eof;
};

static struct run runs[MAX_RUNS];
static int sig_pipe[2];

static void on_sigchld(int s) {
  (void)s;
  int e = errno;
  (void)!write(sig_pipe[1], "c", 1);
  errno = e;
}

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r == 0) return -1;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void put_u32(unsigned char *b, uint32_t v) {
  b[0] = v >> 24, b[1] = v >> 16, b[2] = v >> 8, b[3] = v;
}

static uint32_t get_u32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void send_frame(char type, uint32_t id, const void *data, uint32_t len) {
  unsigned char h[9];
  h[0] = (unsigned char)type;
  put_u32(h + 1, id);
  put_u32(h + 5, len);
  if (write_all(1, h, 9) < 0 || (len > 0 && write_all(1, data, len) < 0)) _exit(0); /* lessl is gone */
}

static struct run *find(uint32_t id) {
  for (int i = 0; i < MAX_RUNS; i++)
    if (runs[i].pid != 0 && runs[i].id == id) return &runs[i];
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* The run's end goes out once it is reaped and both its outputs reached their end. */
static void maybe_finish(struct run *r) {
  if (!r->reaped || r->out >= 0 || r->err >= 0) return;
  unsigned char b[4];
  int code = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128 + WTERMSIG(r->status);
  put_u32(b, (uint32_t)code);
  send_frame('X', r->id, b, 4);
  close_fd(&r->in);
  free(r->pending);
  memset(r, 0, sizeof *r);
}

/* Splits a run frame's NUL-terminated fields; answers how many, at most max. */
static int fields(char *p, uint32_t len, char **out, int max) {
  int n = 0;
  char *end = p + len;
  while (p < end && n < max) {
    char *z = memchr(p, '\0', (size_t)(end - p));
    if (z == NULL) break;
    out[n++] = p;
    p = z + 1;
  }
  return n;
}

static void start_run(uint32_t id, char *payload, uint32_t len) {
  static char *f[4096];
  int n = fields(payload, len, f, 4096);
  if (n < 5) return;
  int argc = atoi(f[3]);
  if (argc < 1 || 4 + argc >= n) return;
  int envc = atoi(f[4 + argc]);
  if (envc < 0 || 5 + argc + envc > n) return;
  char **argv = calloc((size_t)argc + 1, sizeof *argv);
  char **envp = calloc((size_t)envc + 1, sizeof *envp);
  for (int i = 0; i < argc; i++) argv[i] = f[4 + i];
  for (int i = 0; i < envc; i++) envp[i] = f[5 + argc + i];
  struct run *r = NULL;
  for (int i = 0; i < MAX_RUNS && r == NULL; i++)
    if (runs[i].pid == 0) r = &runs[i];
  int po[2], pe[2], pi[2];
  if (r == NULL || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 || pipe2(pi, O_CLOEXEC) < 0) {
    const char *msg = "lessl-agent: cannot start the command\n";
    send_frame('e', id, msg, (uint32_t)strlen(msg));
    unsigned char b[4];
    put_u32(b, 126);
    send_frame('X', id, b, 4);
    goto done;
  }
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGCHLD, SIG_DFL);
    setsid();
    dup2(pi[0], 0), dup2(po[1], 1), dup2(pe[1], 2);
    gid_t gid = (gid_t)strtoul(f[1], NULL, 10);
    uid_t uid = (uid_t)strtoul(f[0], NULL, 10);
    if (f[1][0] != '\0' && (setgroups(0, NULL) < 0 || setgid(gid) < 0)) _exit(126);
    if (f[0][0] != '\0' && setuid(uid) < 0) _exit(126);
    if (f[2][0] != '\0' && chdir(f[2]) < 0) {
      dprintf(2, "lessl-agent: cd %s: %s\n", f[2], strerror(errno));
      _exit(126);
    }
    execvpe(argv[0], argv, envp);
    dprintf(2, "lessl-agent: %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(pi[0]), close(po[1]), close(pe[1]);
  fcntl(pi[1], F_SETFL, O_NONBLOCK);
  *r = (struct run){.id = id, .pid = pid, .out = po[0], .err = pe[0], .in = pi[1]};
  unsigned char b[4];
  put_u32(b, (uint32_t)pid);
  send_frame('S', id, b, 4);
done:
  free(argv);
  free(envp);
}

/* Writes what stdin it can without blocking; closes stdin once it ended and all is written. */
static void flush_stdin(struct run *r) {
  while (r->in >= 0 && r->pending_len > 0) {
    ssize_t w = write(r->in, r->pending, r->pending_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      r->pending_len = 0; /* the command closed its stdin */
      break;
    }
    memmove(r->pending, r->pending + w, r->pending_len - (size_t)w);
    r->pending_len -= (size_t)w;
  }
  if (r->stdin_eof && r->pending_len == 0) close_fd(&r->in);
}

static void control(void) {
  unsigned char h[9];
  if (read_all(0, h, 9) < 0) exit(0); /* the channel closed: lessl is gone; commands keep running */
  uint32_t id = get_u32(h + 1), len = get_u32(h + 5);
  if (len > MAX_FRAME) exit(2);
  char *p = malloc(len + 1);
  if (len > 0 && read_all(0, p, len) < 0) exit(0);
  p[len] = '\0';
  struct run *r = find(id);
  if (h[0] == 'R' && r == NULL) start_run(id, p, len);
  else if (h[0] == 'I' && r != NULL && r->in >= 0 && !r->stdin_eof) {
    r->pending = realloc(r->pending, r->pending_len + len);
    memcpy(r->pending + r->pending_len, p, len);
    r->pending_len += len;
    flush_stdin(r);
  } else if (h[0] == 'E' && r != NULL) {
    r->stdin_eof = 1;
    flush_stdin(r);
  } else if (h[0] == 'K' && r != NULL && len == 1 && !r->reaped)
    kill(-r->pid, p[0]);
  free(p);
}

static void reap(void) {
  char c[64];
  while (read(sig_pipe[0], c, sizeof c) > 0) {
  }
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (int i = 0; i < MAX_RUNS; i++)
      if (runs[i].pid == pid) {
        runs[i].status = st, runs[i].reaped = 1;
        maybe_finish(&runs[i]);
      }
  }
}

/* Relays one read of a run's output; at its end the pipe closes. */
static void relay(struct run *r, int *fd, char type) {
  static char buf[65536];
  ssize_t n = read(*fd, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    close_fd(fd);
    maybe_finish(r);
    return;
  }
  send_frame(type, r->id, buf, (uint32_t)n);
}

int main(void) {
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) return 1;
  struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  for (;;) {
    struct pollfd pf[2 + 3 * MAX_RUNS];
    struct run *who[2 + 3 * MAX_RUNS];
    int *which[2 + 3 * MAX_RUNS];
    int n = 0;
    pf[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = sig_pipe[0], .events = POLLIN};
    for (int i = 0; i < MAX_RUNS; i++) {
      struct run *r = &runs[i];
      if (r->pid == 0) continue;
      if (r->out >= 0) who[n] = r, which[n] = &r->out, pf[n++] = (struct pollfd){.fd = r->out, .events = POLLIN};
      if (r->err >= 0) who[n] = r, which[n] = &r->err, pf[n++] = (struct pollfd){.fd = r->err, .events = POLLIN};
      if (r->in >= 0 && r->pending_len > 0)
        who[n] = r, which[n] = &r->in, pf[n++] = (struct pollfd){.fd = r->in, .events = POLLOUT};
    }
    if (poll(pf, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (pf[1].revents) reap();
    for (int i = 2; i < n; i++) {
      if (pf[i].revents == 0 || who[i]->pid == 0) continue;
      if (which[i] == &who[i]->in) flush_stdin(who[i]);
      else relay(who[i], which[i], which[i] == &who[i]->out ? 'O' : 'e');
    }
    if (pf[0].revents) control();
  }
}
