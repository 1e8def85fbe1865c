/*
 * lessl-agent: the main process of a warm container. It runs the commands lessl sends it over
 * one byte stream (fd 0 in, fd 1 out: the container's attach stream), so a warm task costs a
 * fork and an exec, not Docker API round trips. It is PID 1: it reaps every zombie.
 *
 * Frames, both ways: type (1 byte), run (u32, big-endian), length (u32, big-endian), payload.
 *   in   'R' run:   NUL-terminated strings: user, group, cwd, argc, argv..., envc, env...
 *                   (user and group: a number or a name from /etc/passwd and /etc/group, or
 *                   empty: root; env entries are set over the agent's own environment)
 *        'I' stdin: bytes for the run's stdin;  'E': its stdin ends
 *        'K' kill:  1 byte, the signal, sent to the run's process group (after a KILL the run
 *                   ends once its command is reaped, whoever still holds its output pipes)
 *        'P' ping:  answered with 'P' and the same payload
 *   out  'S' started: u32 pid;  'O' stdout bytes;  'e' stderr bytes
 *        'A' stdin taken: u32, bytes of 'I' frames written to the command (or dropped: its
 *            stdin closed), so lessl keeps a bounded window of stdin in flight
 *        'X' exit: i32, the exit code, or 128 + the signal that ended it (after all its output),
 *            then 1 byte: 1 when the command could not be started (the reason is on stderr)
 *            and its file does not exist, else 0
 * Output is read only as fast as fd 1 takes it (back-pressure reaches the command's pipes);
 * stdin is written without blocking (what the command has not read yet waits here).
 *
 * Connections to TCP ports served inside the container (127.0.0.1, its own network namespace),
 * multiplexed by an id in the run field:
 *   in   'C' connect: the port, as decimal text;  'D' data: bytes for the connection
 *        'F' finish: lessl's side ended (write side shut once its data is written)
 *        'Z' close: abandon it (closed at once, no answer);  'W' window: u32, bytes of 'd' lessl took
 *   out  'c' connected;  'r' refused: the reason (strerror);  'd' data from the peer
 *        'f' the peer finished (once);  'z' closed (once): empty when both sides finished, else why
 *        'w' written: u32, bytes of 'D' written to the socket (or dropped), so lessl keeps a window
 * Each connection reads at most CONN_WINDOW bytes ahead of lessl's 'W', and lessl sends at most
 * CONN_WINDOW ahead of 'w': a slow reader on either side holds only its own connection.
 * `lessl-agent --forward` speaks the same frames but runs no processes (an exec'd forwarder into
 * a container whose main process is not the agent); it exits when its stdin ends.
 *
 * `lessl-agent --sockets PATH` runs on lessl's own machine, as a child of the node process, with
 * node's IPC channel (fd NODE_CHANNEL_FD, JSON lines). It enters the network namespace at PATH (the
 * one Docker keeps for a container, its SandboxKey) and drops to nobody (65534); then for each line
 * `[id,port]` it connects to 127.0.0.1:port there and hands the connected socket itself to node
 * (a NODE_HANDLE message with the fd as SCM_RIGHTS: node makes it a net.Socket), or answers
 * `[id,"reason"]`. The bytes then go between node and the port with nothing in between. It cannot
 * enter: the reason on stderr, exit 125. It exits when the channel closes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define MAX_RUNS 256
#define MAX_FRAME (1u << 20)
#define MAX_CONNS 1024
#define CONN_WINDOW (256u << 10)
#define CONN_CHUNK (64u << 10)

struct run {
  uint32_t id;
  pid_t pid;
  int out, err, in; /* pipe ends, -1 when closed */
  int status;       /* set once reaped */
  int reaped;
  char *pending;    /* stdin not written yet */
  size_t pending_len;
  int stdin_eof;
  int killed; /* a KILL was sent: once the command itself is gone, its output is not waited for */
};

static struct run runs[MAX_RUNS];
/* Capabilities the agent holds only to switch users and signal runs (its arguments): dropped from
 * every run's bounding set, so a run has exactly the container's configured capabilities. */
static int drop_caps[64];
static int n_drop_caps;
static int sig_pipe[2];
/* --forward: connections only, no runs. */
static int forward_only;

struct conn {
  int used;
  uint32_t id;
  int fd;
  int connecting;   /* a non-blocking connect in progress */
  char *pending;    /* 'D' bytes not written yet (at most CONN_WINDOW: lessl keeps to the window) */
  size_t pending_len;
  int fin;          /* lessl finished: shut the write side once pending is written */
  int wr_shut;
  int rd_eof;       /* the peer finished ('f' sent) */
  uint32_t unacked; /* 'd' bytes lessl has not taken yet */
  uint32_t written; /* 'D' bytes written but not yet counted back with 'w' */
};

static struct conn conns[MAX_CONNS];
static int conn_control(char type, uint32_t id, char *p, uint32_t len);

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

/* Frames out are gathered here and written at once before the loop waits again: one write (one
   pass through Docker's copy of the stream) for all the frames of a loop turn, not two per frame. */
static unsigned char out_buf[256u << 10];
static size_t out_len;

static void out_flush(void) {
  if (out_len > 0 && write_all(1, out_buf, out_len) < 0) _exit(0); /* lessl is gone */
  out_len = 0;
}

static void send_frame(char type, uint32_t id, const void *data, uint32_t len) {
  unsigned char h[9];
  h[0] = (unsigned char)type;
  put_u32(h + 1, id);
  put_u32(h + 5, len);
  if (out_len + 9 + len > sizeof out_buf) out_flush();
  if (9 + (size_t)len > sizeof out_buf) {
    if (write_all(1, h, 9) < 0 || write_all(1, data, len) < 0) _exit(0);
    return;
  }
  memcpy(out_buf + out_len, h, 9);
  if (len > 0) memcpy(out_buf + out_len + 9, data, len);
  out_len += 9 + (size_t)len;
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
  unsigned char b[5] = {0};
  int code = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128 + WTERMSIG(r->status);
  put_u32(b, (uint32_t)code);
  send_frame('X', r->id, b, 5);
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

static int numeric(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/*
 * Finds a line of a colon-separated file (/etc/passwd, /etc/group) whose field 0 is `name`, or
 * (name NULL) whose field 2 is `id`; copies it into line and splits it into f. Read with plain
 * stdio: a static binary must not load the C library's name services.
 */
static int lookup(const char *path, const char *name, unsigned long id, char *line, size_t size, char **f, int nf) {
  FILE *fp = fopen(path, "re");
  if (fp == NULL) return 0;
  int found = 0;
  while (!found && fgets(line, (int)size, fp) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    int n = 0;
    for (char *p = line; n < nf; n++) {
      f[n] = p;
      p = strchr(p, ':');
      if (p == NULL) {
        n++;
        break;
      }
      *p++ = '\0';
    }
    if (n < 3) continue;
    found = name != NULL ? strcmp(f[0], name) == 0 : numeric(f[2]) && strtoul(f[2], NULL, 10) == id;
  }
  fclose(fp);
  return found;
}

/* The groups that list `user` as a member (its supplementary groups); answers how many. */
static int member_groups(const char *user, gid_t *out, int max) {
  FILE *fp = fopen("/etc/group", "re");
  if (fp == NULL) return 0;
  int n = 0;
  char line[4096];
  while (n < max && fgets(line, sizeof line, fp) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    char *rest = line;
    strsep(&rest, ":"), strsep(&rest, ":");
    char *gid = strsep(&rest, ":"), *members = rest, *m;
    if (gid == NULL || members == NULL || !numeric(gid)) continue;
    while (n < max && (m = strsep(&members, ",")) != NULL)
      if (strcmp(m, user) == 0) out[n++] = (gid_t)strtoul(gid, NULL, 10);
  }
  fclose(fp);
  return n;
}

/* Why a child could not start its command: which step, and errno. */
struct failure {
  int step; /* 1 user, 2 group, 3 cwd, 4 exec, 5 capabilities */
  int err;
};

static _Noreturn void fail(int fd, int step, int err) {
  struct failure x = {step, err};
  (void)!write(fd, &x, sizeof x);
  _exit(step == 4 && err == ENOENT ? 127 : 126);
}

/*
 * In the child: takes on the run's user and group (as Docker does: a name or a number, the
 * user's primary group and the groups that list it, HOME from its entry unless the run sets it).
 */
static void become(const char *user, const char *group, int fd) {
  char line[4096], gline[4096];
  char *pw[7], *gr[4];
  if (*user == '\0' && *group == '\0') return;
  unsigned long uid = 0, gid = 0;
  int known = 0;
  if (*user != '\0') {
    known = lookup("/etc/passwd", numeric(user) ? NULL : user, strtoul(user, NULL, 10), line, sizeof line, pw, 7);
    if (!known && !numeric(user)) fail(fd, 1, ENOENT);
    uid = known ? strtoul(pw[2], NULL, 10) : strtoul(user, NULL, 10);
    gid = known && numeric(pw[3]) ? strtoul(pw[3], NULL, 10) : 0;
  }
  if (*group != '\0') {
    int g = lookup("/etc/group", numeric(group) ? NULL : group, strtoul(group, NULL, 10), gline, sizeof gline, gr, 4);
    if (!g && !numeric(group)) fail(fd, 2, ENOENT);
    gid = g ? strtoul(gr[2], NULL, 10) : strtoul(group, NULL, 10);
  }
  gid_t groups[NGROUPS_MAX < 256 ? NGROUPS_MAX : 256];
  int ng = known ? member_groups(pw[0], groups, (int)(sizeof groups / sizeof *groups)) : 0;
  if (setgroups((size_t)ng, groups) < 0 || setgid((gid_t)gid) < 0) fail(fd, 2, errno);
  if (setuid((uid_t)uid) < 0) fail(fd, 1, errno);
  if (getenv("LESSL_AGENT_HOME_SET") == NULL) setenv("HOME", known && pw[5] != NULL ? pw[5] : "/", 1);
}

/* Makes a missing working directory and its parents (root's, mode 0755), as Docker does for a container's. */
static void make_dirs(const char *path) {
  char p[4096];
  if (*path != '/' || strlen(path) >= sizeof p) return;
  strcpy(p, path);
  for (char *s = p + 1;; s++)
    if (*s == '/' || *s == '\0') {
      char c = *s;
      *s = '\0';
      mkdir(p, 0755); /* exists already: fine; any other failure shows at the chdir */
      if (c == '\0') return;
      *s = c;
    }
}

/* In the child: the run's process, in its own process group, with its pipes, user, cwd and env. */
static _Noreturn void child(char **f, char **argv, char **env, int envc, int pi, int po, int pe, int fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  setsid();
  dup2(pi, 0), dup2(po, 1), dup2(pe, 2);
  unsetenv("LESSL_AGENT_HOME_SET");
  for (int i = 0; i < envc; i++) {
    if (strncmp(env[i], "HOME=", 5) == 0) setenv("LESSL_AGENT_HOME_SET", "1", 1);
    putenv(env[i]);
  }
  for (int i = 0; i < n_drop_caps; i++)
    if (prctl(PR_CAPBSET_DROP, drop_caps[i], 0, 0, 0) < 0) fail(fd, 5, errno);
  if (f[2][0] != '\0') make_dirs(f[2]);
  become(f[0], f[1], fd);
  unsetenv("LESSL_AGENT_HOME_SET");
  if (f[2][0] != '\0' && chdir(f[2]) < 0) fail(fd, 3, errno);
  execvp(argv[0], argv);
  fail(fd, 4, errno);
}

/* A run that could not start: why on its stderr, then its exit (127 and the not-found mark, or 126). */
static void refuse(uint32_t id, const char *what, const char *detail, int err) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "lessl-agent: %s%s: %s\n", what, detail, err == 0 ? "cannot start" : strerror(err));
  send_frame('e', id, msg, (uint32_t)(n < (int)sizeof msg ? n : (int)sizeof msg - 1));
  unsigned char b[5];
  put_u32(b, what[0] == 'e' && err == ENOENT ? 127 : 126);
  b[4] = what[0] == 'e' && err == ENOENT;
  send_frame('X', id, b, 5);
}

/* Waits for the child's exec: answers 0 once it ran, else reports why it could not. */
static int started(uint32_t id, int fd, char **f, char **argv) {
  struct failure x;
  ssize_t n;
  while ((n = read(fd, &x, sizeof x)) < 0 && errno == EINTR) {
  }
  close(fd);
  if (n != (ssize_t)sizeof x) return 0;
  static const char *steps[] = {"", "unable to find user ", "unable to find group ", "cd ", "exec ", "drop capabilities"};
  const char *detail = x.step == 1 ? f[0] : x.step == 2 ? f[1] : x.step == 3 ? f[2] : x.step == 5 ? "" : argv[0];
  refuse(id, steps[x.step >= 1 && x.step <= 5 ? x.step : 4], detail, x.err);
  return -1;
}

static void start_run(uint32_t id, char *payload, uint32_t len) {
  static char *f[4096];
  int n = fields(payload, len, f, 4096);
  int argc = n >= 5 ? atoi(f[3]) : 0;
  int envc = argc >= 1 && 4 + argc < n ? atoi(f[4 + argc]) : -1;
  struct run *r = NULL;
  for (int i = 0; i < MAX_RUNS && r == NULL; i++)
    if (runs[i].pid == 0) r = &runs[i];
  int po[2], pe[2], pi[2], ps[2];
  if (envc < 0 || 5 + argc + envc > n || r == NULL || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 ||
      pipe2(pi, O_CLOEXEC) < 0 || pipe2(ps, O_CLOEXEC) < 0)
    return refuse(id, "run", "", 0);
  char **argv = calloc((size_t)argc + 1, sizeof *argv);
  for (int i = 0; i < argc; i++) argv[i] = f[4 + i];
  pid_t pid = fork();
  if (pid == 0) child(f, argv, f + 5 + argc, envc, pi[0], po[1], pe[1], ps[1]);
  close(pi[0]), close(po[1]), close(pe[1]), close(ps[1]);
  if (pid < 0 || started(id, ps[0], f, argv) < 0) {
    close(pi[1]), close(po[0]), close(pe[0]);
    if (pid < 0) refuse(id, "fork", "", errno);
    free(argv);
    return;
  }
  free(argv);
  fcntl(pi[1], F_SETFL, O_NONBLOCK);
  *r = (struct run){.id = id, .pid = pid, .out = po[0], .err = pe[0], .in = pi[1]};
  unsigned char b[4];
  put_u32(b, (uint32_t)pid);
  send_frame('S', id, b, 4);
}

/* Tells lessl that `n` bytes of the run's stdin left the agent (written, or dropped). */
static void taken(uint32_t id, size_t n) {
  unsigned char b[4];
  if (n == 0) return;
  put_u32(b, (uint32_t)n);
  send_frame('A', id, b, 4);
}

/* Writes what stdin it can without blocking; closes stdin once it ended and all is written. */
static void flush_stdin(struct run *r) {
  size_t done = 0;
  while (r->in >= 0 && r->pending_len > 0) {
    ssize_t w = write(r->in, r->pending, r->pending_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      done += r->pending_len; /* the command closed its stdin: the rest is dropped */
      r->pending_len = 0;
      close_fd(&r->in);
      break;
    }
    memmove(r->pending, r->pending + w, r->pending_len - (size_t)w);
    r->pending_len -= (size_t)w;
    done += (size_t)w;
  }
  taken(r->id, done);
  if (r->stdin_eof && r->pending_len == 0) close_fd(&r->in);
}

/*
 * After a KILL, once the command is reaped: its output pipes are closed rather than read to their
 * end (a process that left its group may hold them open), so the run ends now.
 */
static void drop_output(struct run *r) {
  close_fd(&r->out);
  close_fd(&r->err);
  maybe_finish(r);
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
  if (conn_control((char)h[0], id, p, len)) {
  } else if (h[0] == 'R' && forward_only)
    refuse(id, "run", " (a forwarder runs nothing)", 0);
  else if (h[0] == 'R' && r == NULL) start_run(id, p, len);
  else if (h[0] == 'I' && r != NULL && r->in >= 0 && !r->stdin_eof) {
    r->pending = realloc(r->pending, r->pending_len + len);
    memcpy(r->pending + r->pending_len, p, len);
    r->pending_len += len;
    flush_stdin(r);
  } else if (h[0] == 'I')
    taken(id, len); /* no such run, or its stdin is closed: dropped */
  else if (h[0] == 'E' && r != NULL) {
    r->stdin_eof = 1;
    flush_stdin(r);
  } else if (h[0] == 'K' && r != NULL && len == 1) {
    kill(-r->pid, p[0]); /* the group outlives its leader while a member lives: no other run has its id */
    if (p[0] == SIGKILL) {
      r->killed = 1;
      if (r->reaped) drop_output(r);
    }
  }
  else if (h[0] == 'P')
    send_frame('P', id, p, len);
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
        if (runs[i].killed) drop_output(&runs[i]);
        else maybe_finish(&runs[i]);
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

static struct conn *find_conn(uint32_t id) {
  for (int i = 0; i < MAX_CONNS; i++)
    if (conns[i].used && conns[i].id == id) return &conns[i];
  return NULL;
}

static void send_u32(char type, uint32_t id, uint32_t v) {
  unsigned char b[4];
  put_u32(b, v);
  send_frame(type, id, b, 4);
}

static void send_text(char type, uint32_t id, const char *text) {
  send_frame(type, id, text, (uint32_t)strlen(text));
}

/* Ends a connection: its socket closed, its slot freed; `report`: 'z' says so (with why, when err). */
static void conn_end(struct conn *c, int err, int report) {
  if (report) send_text('z', c->id, err == 0 ? "" : strerror(err));
  if (c->fd >= 0) close(c->fd);
  free(c->pending);
  memset(c, 0, sizeof *c);
  c->fd = -1;
}

/* Closed once both sides finished. */
static void conn_maybe_close(struct conn *c) {
  if (c->rd_eof && c->wr_shut) conn_end(c, 0, 1);
}

/* 'C': a non-blocking connect to 127.0.0.1:port; answered 'c' or 'r' (now, or once it completes). */
static void conn_open(uint32_t id, const char *port_text) {
  char *end;
  unsigned long port = strtoul(port_text, &end, 10);
  struct conn *c = NULL;
  for (int i = 0; i < MAX_CONNS && c == NULL; i++)
    if (!conns[i].used) c = &conns[i];
  if (*port_text == '\0' || *end != '\0' || port < 1 || port > 65535) return send_text('r', id, "bad port");
  if (find_conn(id) != NULL) return send_text('r', id, "connection id in use");
  if (c == NULL) return send_text('r', id, "too many connections");
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return send_text('r', id, strerror(errno));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  *c = (struct conn){.used = 1, .id = id, .fd = fd};
  int one = 1; /* relayed bytes go out as they come: no Nagle delay on top of the channel's */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return send_frame('c', id, NULL, 0);
  if (errno == EINPROGRESS || errno == EINTR) {
    c->connecting = 1;
    return;
  }
  int err = errno;
  send_text('r', id, strerror(err));
  conn_end(c, 0, 0);
}

/* A connect in progress completed: 'c', or 'r' with why. */
static void conn_connected(struct conn *c) {
  int err = 0;
  socklen_t n = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &n) < 0) err = errno;
  if (err == EINPROGRESS) return;
  if (err != 0) {
    send_text('r', c->id, strerror(err));
    return conn_end(c, 0, 0);
  }
  c->connecting = 0;
  send_frame('c', c->id, NULL, 0);
}

/* Writes what it can of lessl's bytes without blocking ('w' counts them); then the finish. */
static void conn_flush(struct conn *c) {
  size_t done = 0;
  if (c->connecting) return;
  while (c->pending_len > 0) {
    ssize_t w = write(c->fd, c->pending, c->pending_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      int err = errno;
      if (c->written + done > 0) send_u32('w', c->id, c->written + (uint32_t)done);
      return conn_end(c, err, 1);
    }
    memmove(c->pending, c->pending + w, c->pending_len - (size_t)w);
    c->pending_len -= (size_t)w;
    done += (size_t)w;
  }
  /* counted back by halves of the window: lessl, allowed a whole window ahead, never waits on a
     count held back, and a small exchange sends none */
  c->written += (uint32_t)done;
  if (c->written >= CONN_WINDOW / 2) {
    send_u32('w', c->id, c->written);
    c->written = 0;
  }
  if (c->fin && c->pending_len == 0 && !c->wr_shut) {
    shutdown(c->fd, SHUT_WR);
    c->wr_shut = 1;
    conn_maybe_close(c);
  }
}

/* Relays one read of the peer's bytes, at most what lessl's window leaves; its end is 'f'. */
static void conn_read(struct conn *c) {
  static char buf[CONN_CHUNK];
  size_t room = CONN_WINDOW - c->unacked;
  if (room == 0) return;
  ssize_t n = read(c->fd, buf, room < sizeof buf ? room : sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n < 0) return conn_end(c, errno, 1);
  if (n == 0) {
    c->rd_eof = 1;
    send_frame('f', c->id, NULL, 0);
    return conn_maybe_close(c);
  }
  c->unacked += (uint32_t)n;
  send_frame('d', c->id, buf, (uint32_t)n);
}

/* The connection frames lessl sends ('C', 'D', 'F', 'Z', 'W'); answers 0 for any other type. */
static int conn_control(char type, uint32_t id, char *p, uint32_t len) {
  struct conn *c = find_conn(id);
  if (type == 'C') conn_open(id, p);
  else if (type == 'D' && c != NULL && !c->fin) {
    c->pending = realloc(c->pending, c->pending_len + len);
    memcpy(c->pending + c->pending_len, p, len);
    c->pending_len += len;
    conn_flush(c);
  } else if (type == 'F' && c != NULL) {
    c->fin = 1;
    conn_flush(c);
  } else if (type == 'Z' && c != NULL)
    conn_end(c, 0, 0);
  else if (type == 'W' && c != NULL && len == 4) {
    uint32_t n = get_u32((unsigned char *)p);
    c->unacked -= n < c->unacked ? n : c->unacked;
  } else
    return type == 'D' || type == 'F' || type == 'Z' || type == 'W';
  return 1;
}

/* What a connection waits for: its connect, the peer's bytes (window open), or room to write. */
static short conn_events(const struct conn *c) {
  if (c->connecting) return POLLOUT;
  short ev = 0;
  if (!c->rd_eof && c->unacked < CONN_WINDOW) ev |= POLLIN;
  if (c->pending_len > 0) ev |= POLLOUT;
  return ev;
}

static void conn_ready(struct conn *c, short want, short got) {
  if (c->connecting) return conn_connected(c);
  if ((want & POLLIN) && (got & (POLLIN | POLLHUP | POLLERR))) conn_read(c);
  if (c->used && (want & POLLOUT) && (got & (POLLOUT | POLLHUP | POLLERR))) conn_flush(c);
}

#define MAX_POLL (2 + 3 * MAX_RUNS + MAX_CONNS)

/* What the loop polls: fd 0, the SIGCHLD pipe, each run's pipes, each connection's socket. */
struct watch {
  struct pollfd pf[MAX_POLL];
  struct run *who[MAX_POLL];
  int *which[MAX_POLL];
  struct conn *conn[MAX_POLL];
  int n;
};

static void watch_add(struct watch *w, int fd, short events, struct run *r, int *which, struct conn *c) {
  w->who[w->n] = r, w->which[w->n] = which, w->conn[w->n] = c;
  w->pf[w->n++] = (struct pollfd){.fd = fd, .events = events};
}

static void watch_fill(struct watch *w) {
  w->n = 0;
  watch_add(w, 0, POLLIN, NULL, NULL, NULL);
  watch_add(w, sig_pipe[0], POLLIN, NULL, NULL, NULL);
  for (int i = 0; i < MAX_RUNS; i++) {
    struct run *r = &runs[i];
    if (r->pid == 0) continue;
    if (r->out >= 0) watch_add(w, r->out, POLLIN, r, &r->out, NULL);
    if (r->err >= 0) watch_add(w, r->err, POLLIN, r, &r->err, NULL);
    if (r->in >= 0 && r->pending_len > 0) watch_add(w, r->in, POLLOUT, r, &r->in, NULL);
  }
  for (int i = 0; i < MAX_CONNS; i++) {
    short ev = conns[i].used ? conn_events(&conns[i]) : 0;
    if (ev != 0) watch_add(w, conns[i].fd, ev, NULL, NULL, &conns[i]);
  }
}

/* --sockets PATH: enters the network namespace at `path`, then drops every privilege (it only
 * connects to the namespace's loopback from then on). */
static void enter_netns(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  const char *step = "open";
  if (fd >= 0 && (step = "setns", setns(fd, CLONE_NEWNET) == 0) &&
      (step = "drop privileges", setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0) &&
      (step = "no_new_privs", prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)) {
    close(fd);
    return;
  }
  char msg[PATH_MAX + 160];
  int n = snprintf(msg, sizeof msg, "lessl-agent: cannot enter the network namespace %s: %s: %s\n", path, step, strerror(errno));
  write_all(2, msg, (size_t)n);
  _exit(125);
}

/* --sockets: one connection to 127.0.0.1:port handed to node over its IPC channel `ch` (see the top). */
static int hand_socket(int ch, unsigned id, unsigned long port) {
  char msg[160];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  struct timeval limit = {.tv_sec = 2}; /* a loopback connect answers at once; a full backlog does not */
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  }
  if (fd < 0 || port < 1 || port > 65535 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    int n = snprintf(msg, sizeof msg, "[%u,\"%s\"]\n", id, port < 1 || port > 65535 ? "bad port" : strerror(errno));
    if (fd >= 0) close(fd);
    return write_all(ch, msg, (size_t)n);
  }
  /* node gets it non-blocking (libuv does not make a received fd so: a blocking one would stall
   * node's event loop on a peer that reads slowly), with no send timeout left */
  limit.tv_sec = 0;
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    int n = snprintf(msg, sizeof msg, "[%u,\"%s\"]\n", id, strerror(errno));
    close(fd);
    return write_all(ch, msg, (size_t)n);
  }
  int n = snprintf(msg, sizeof msg, "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":[%u]}\n", id);
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = msg, .iov_len = (size_t)n};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  ssize_t sent;
  while ((sent = sendmsg(ch, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  close(fd);
  return sent == n ? 0 : -1;
}

/* --sockets PATH: node's lines `[id,port]` answered until the channel closes (node's own lines,
 * `{"cmd":...}` acknowledgements, are skipped). */
static int sockets_mode(const char *path) {
  const char *env = getenv("NODE_CHANNEL_FD");
  int ch = env == NULL ? -1 : atoi(env);
  if (ch <= 2) {
    const char *msg = "lessl-agent --sockets: no node IPC channel (NODE_CHANNEL_FD)\n";
    write_all(2, msg, strlen(msg));
    return 2;
  }
  enter_netns(path);
  static char buf[64 << 10];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(ch, buf + have, sizeof buf - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    have += (size_t)n;
    char *nl;
    while ((nl = memchr(buf, '\n', have)) != NULL) {
      *nl = '\0';
      char *p = buf + 1, *q;
      unsigned long id = strtoul(p, &q, 10), port = *q == ',' ? strtoul(q + 1, &p, 10) : 0;
      if (buf[0] == '[' && q > buf + 1 && *q == ',' && *p == ']' && hand_socket(ch, (unsigned)id, port) < 0) return 0;
      size_t used = (size_t)(nl + 1 - buf);
      memmove(buf, nl + 1, have - used);
      have -= used;
    }
    if (have == sizeof buf) return 1; /* a line longer than the buffer: not node */
  }
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--sockets") == 0) return sockets_mode(argv[2]);
  forward_only = argc == 2 && strcmp(argv[1], "--forward") == 0;
  for (int i = 1; i < argc && n_drop_caps < 64 && !forward_only; i++) drop_caps[n_drop_caps++] = atoi(argv[i]);
  if (!forward_only) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); /* orphans of runs come back here to be reaped */
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) return 1;
  struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  static struct watch w;
  for (;;) {
    watch_fill(&w);
    out_flush();
    if (poll(w.pf, (nfds_t)w.n, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (w.pf[1].revents) reap();
    for (int i = 2; i < w.n; i++) {
      struct conn *c = w.conn[i];
      if (w.pf[i].revents == 0) continue;
      if (c != NULL) {
        if (c->used) conn_ready(c, w.pf[i].events, w.pf[i].revents);
      } else if (w.who[i]->pid == 0) continue;
      else if (w.which[i] == &w.who[i]->in) flush_stdin(w.who[i]);
      else relay(w.who[i], w.which[i], w.which[i] == &w.who[i]->out ? 'O' : 'e');
    }
    if (w.pf[0].revents) control();
  }
}
