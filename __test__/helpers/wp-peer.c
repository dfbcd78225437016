/*
 * The peer of the events-wp tests on remote memory (reliability.spec.ts): it maps anonymous
 * memory, registers it MISSING|WP with EVENT_REMOVE/REMAP/UNMAP, hands the userfaultfd over in
 * Firecracker's handshake (as peer.c does), then faults, writes, discards, moves and unmaps, and
 * checks every byte. The handler serves page p with the tests' pattern, write-protected, and
 * unprotects on wp faults. Each step prints a line; exit 0 if every byte was right. An alarm ends
 * a step that never returns (a thread left asleep, or woken over and over without its page).
 *
 *   wp-peer SOCKET MODE
 *   MODE: events   remove, remap and unmap events, with wp faults before and after them
 *         moved    after a remap, read a never-touched page and write a protected page at the new place
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
#define PAGES 16

static unsigned char expected(size_t p, size_t i) { return (unsigned char)((p * 31 + i * 7 + 1) & 0xff); }
static int wrong;

#include "send-fd.h"

static void check(const char *what, unsigned char got, unsigned char want) {
  printf("%s: %u%s\n", what, got, got == want ? "" : " WRONG");
  fflush(stdout);
  if (got != want) wrong++;
}

static void send_handshake(const char *path, unsigned char *mem, int uffd) {
  int sock = connect_to(path);
  char body[256];
  snprintf(body, sizeof body, "[{\"base_host_virt_addr\":%lu,\"size\":%d,\"offset\":0,\"page_size\":%d}]",
           (unsigned long)(uintptr_t)mem, PAGES * PAGE, PAGE);
  send_handshake_fd(sock, body, uffd);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: wp-peer SOCKET MODE\n");
    return 2;
  }
  const char *mode = argv[2];
  /* 32 pages reserved, the first 16 used: mremap moves pages into the hole after them. */
  unsigned char *mem = mmap(NULL, 2 * PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  if (munmap(mem + PAGES * PAGE, PAGES * PAGE) < 0) die("munmap hole");
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API,
                           .features = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP |
                                       UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  struct uffdio_register reg = {.range = {.start = (uintptr_t)mem, .len = PAGES * PAGE},
                                .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");
  send_handshake(argv[1], mem, uffd);
  alarm(10);

  /* Page 1: served protected, written (a wp fault), removed (REMOVE), served again, written again. */
  check("read 1", mem[PAGE + 5], expected(1, 5));
  mem[PAGE + 5] = 0x99;
  check("write 1", mem[PAGE + 5], 0x99);
  printf("removing page 1\n");
  fflush(stdout);
  if (madvise(mem + PAGE, PAGE, MADV_DONTNEED) < 0) die("madvise");
  printf("removed\n");
  fflush(stdout);
  check("read 1 after remove", mem[PAGE + 5], expected(1, 5));
  mem[PAGE + 7] = 0x42;
  check("write 1 after remove", mem[PAGE + 7], 0x42);

  /* Pages 4..7 move to 16..19 (REMAP); page 4 was served first, so it moves protected. */
  check("read 4", mem[4 * PAGE + 100], expected(4, 100));
  unsigned char *moved = mremap(mem + 4 * PAGE, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, mem + PAGES * PAGE);
  if (moved == MAP_FAILED) die("mremap");
  /* Pages 8..11 go (UNMAP). */
  if (munmap(mem + 8 * PAGE, 4 * PAGE) < 0) die("munmap");

  /* Pages still registered where they were: served, protected, unprotected on write. */
  check("read 14", mem[14 * PAGE + 5], expected(14, 5));
  mem[14 * PAGE + 5] = 0x17;
  check("write 14", mem[14 * PAGE + 5], 0x17);

  if (strcmp(mode, "moved") == 0) {
    /* The moved range is still registered with this userfaultfd in the kernel, at its new place. */
    check("read moved 4 (populated)", moved[100], expected(4, 100));
    printf("touching moved page 5 (missing)\n");
    fflush(stdout);
    unsigned char got = moved[PAGE + 5];
    printf("moved page 5: %u\n", got);
    printf("writing moved page 4 (protected)\n");
    fflush(stdout);
    moved[5] = 0x55;
    check("write moved 4", moved[5], 0x55);
  }
  printf("done, %d wrong\n", wrong);
  return wrong == 0 ? 0 : 1;
}
