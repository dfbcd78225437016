/*
 * A process whose memory the tests serve from TypeScript, as a VM monitor hands its guest memory
 * to a page-fault handler: it maps memory, creates and registers a userfaultfd, sends the fd and a
 * Firecracker-style JSON description over a Unix socket, then reads every page and checks the
 * bytes. Built by the tests with the system compiler.
 *
 *   peer SOCKET MODE PAGES
 *   MODE: serve (read and check every page), hang (read page 0 and wait to be killed),
 *         events (negotiate EVENT_REMOVE/REMAP/UNMAP, then discard, move and unmap parts),
 *         bad-json, no-fd, overlap (malformed handshakes)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE 4096

/* The byte the handler serves at index `i` of page `p`: the same formula as the tests' pattern. */
static unsigned char expected(size_t p, size_t i) { return (unsigned char)((p * 31 + i * 7 + 1) & 0xff); }

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

#include "send-fd.h"

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: peer SOCKET MODE PAGES\n");
    return 2;
  }
  const char *mode = argv[2];
  size_t pages = strtoul(argv[3], NULL, 10);
  size_t size = pages * PAGE;
  unsigned char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");

  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API};
  if (strcmp(mode, "events") == 0) api.features = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP;
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  struct uffdio_register reg = {.range = {.start = (uintptr_t)mem, .len = size}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");

  char body[512];
  if (strcmp(mode, "bad-json") == 0) {
    snprintf(body, sizeof body, "[{\"base_host_virt_addr\": oops");
  } else if (strcmp(mode, "overlap") == 0) {
    snprintf(body, sizeof body,
             "[{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":0,\"page_size\":%d},"
             "{\"base_host_virt_addr\":%lu,\"size\":%d,\"offset\":0,\"page_size\":%d}]",
             (unsigned long)(uintptr_t)mem, size, PAGE, (unsigned long)(uintptr_t)mem + PAGE, PAGE, PAGE);
  } else {
    snprintf(body, sizeof body, "[{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":%d,\"page_size\":%d}]",
             (unsigned long)(uintptr_t)mem, size, PAGE, PAGE);
  }
  int sock = connect_to(argv[1]);
  send_handshake_fd(sock, body, strcmp(mode, "no-fd") == 0 ? -1 : uffd);

  if (strcmp(mode, "serve") == 0) {
    size_t wrong = 0;
    for (size_t p = 0; p < pages; p++) {
      /* The handler serves the snapshot file from offset PAGE on: page p holds file page p + 1. */
      size_t indices[] = {0, 1, 5, 100, PAGE - 1};
      for (size_t k = 0; k < sizeof indices / sizeof *indices; k++) {
        if (mem[p * PAGE + indices[k]] != expected(p + 1, indices[k])) wrong++;
      }
    }
    printf("read %zu pages, %zu wrong bytes\n", pages, wrong);
    return wrong == 0 ? 0 : 1;
  }
  if (strcmp(mode, "events") == 0) {
    /* Each call waits until the handler's loop has read its event. */
    if (madvise(mem, PAGE, MADV_DONTNEED) < 0) die("madvise");
    void *moved = mremap(mem + 4 * PAGE, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, mem + 32 * PAGE);
    if (moved == MAP_FAILED) die("mremap");
    if (munmap(mem + 8 * PAGE, 4 * PAGE) < 0) die("munmap");
    printf("events sent\n");
    return 0;
  }
  if (strcmp(mode, "hang") == 0) {
    printf("reading page 0\n");
    fflush(stdout);
    volatile unsigned char byte = mem[0];
    (void)byte;
    pause();
    return 0;
  }
  /* A malformed handshake: wait for the handler to hang up. */
  char ignored;
  (void)read(sock, &ignored, 1);
  return 0;
}
