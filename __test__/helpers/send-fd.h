/* Shared by the test peers (peer.c, wp-peer.c, vm-peer.c): what a peer does on its socket. It
 * connects to the handler's Unix socket and sends `body` with `fd` as SCM_RIGHTS (no fd if `fd` < 0),
 * as Firecracker's handshake does; die() reports a failed call and exits 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

static void die(const char *what) {
  perror(what);
  exit(2);
}

static int connect_to(const char *path) {
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) die("socket");
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  return sock;
}

static void send_handshake_fd(int sock, const char *body, int fd) {
  struct iovec iov = {.iov_base = (void *)body, .iov_len = strlen(body)};
  char control[CMSG_SPACE(sizeof(int))];
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  }
  if (sendmsg(sock, &msg, 0) < 0) die("sendmsg");
}
