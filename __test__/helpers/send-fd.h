/* Shared by the test peers (peer.c, wp-peer.c): sends `body` on a connected Unix socket with `fd`
 * as SCM_RIGHTS (no fd if `fd` < 0), as Firecracker's handshake does. The includer defines die(). */
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

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
