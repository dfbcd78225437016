/*
 * A process whose memory the tests serve from TypeScript, as a VM monitor hands its guest memory
 * to a page-fault handler: it maps memory, creates and registers a userfaultfd, sends the fd and
 * the JSON body Firecracker sends over a Unix socket, then reads every page and checks the bytes.
 * Built by the tests with the system compiler.
 *
 *   peer SOCKET MODE PAGES [FORM [OPTION...]]
 *   MODE: serve (read and check every page), hang (read page 0 and wait to be killed),
 *         events (negotiate EVENT_REMOVE/REMAP/UNMAP, then discard, move and unmap parts),
 *         bad-json, no-fd, overlap (malformed handshakes)
 *   FORM: the body of a Firecracker release, each page size IN BYTES (Firecracker's CHANGELOG,
 *         #4948: page_size_kib always held bytes despite its name; see
 *         __test__/fixtures/firecracker-handshakes.json for the captured bodies):
 *         1.12+    (default) page_size and the deprecated page_size_kib
 *         1.7-1.11 page_size_kib only
 *         1.0-1.6  neither (4 KiB pages)
 *   OPTION: unknown (add a field a later release might send), huge (map PAGES 2 MiB huge pages
 *           of hugetlbfs instead of 4 KiB pages; the check still reads every 4 KiB of them)
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
#define HUGE_PAGE (2UL << 20)

/* The byte the handler serves at index `i` of page `p`: the same formula as the tests' pattern. */
static unsigned char expected(size_t p, size_t i) { return (unsigned char)((p * 31 + i * 7 + 1) & 0xff); }

#include "send-fd.h"

/* The page-size fields of a range in the body of Firecracker release FORM, all in bytes; with
 * `unknown`, a field that no release sends yet. Returns NULL for a FORM that is not known. */
static const char *page_size_fields(const char *form, unsigned long page_size, int unknown) {
  static char fields[256];
  int at;
  if (strcmp(form, "1.12+") == 0)
    at = snprintf(fields, sizeof fields, ",\"page_size\":%lu,\"page_size_kib\":%lu", page_size, page_size);
  else if (strcmp(form, "1.7-1.11") == 0)
    at = snprintf(fields, sizeof fields, ",\"page_size_kib\":%lu", page_size);
  else if (strcmp(form, "1.0-1.6") == 0)
    at = snprintf(fields, sizeof fields, "%s", "");
  else
    return NULL;
  if (unknown) snprintf(fields + at, sizeof fields - at, ",\"memory_backend\":{\"kind\":\"memfd\",\"slots\":[0,1]}");
  return fields;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: peer SOCKET MODE PAGES [1.12+|1.7-1.11|1.0-1.6 [unknown] [huge]]\n");
    return 2;
  }
  const char *mode = argv[2];
  const char *form = argc > 4 ? argv[4] : "1.12+";
  int unknown = 0, huge = 0;
  for (int i = 5; i < argc; i++) {
    if (strcmp(argv[i], "unknown") == 0) unknown = 1;
    else if (strcmp(argv[i], "huge") == 0) huge = 1;
    else {
      fprintf(stderr, "peer: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  unsigned long page_size = huge ? HUGE_PAGE : PAGE;
  const char *fields = page_size_fields(form, page_size, unknown);
  if (!fields) {
    fprintf(stderr, "peer: unknown body form %s (1.12+, 1.7-1.11 or 1.0-1.6)\n", form);
    return 2;
  }
  size_t pages = strtoul(argv[3], NULL, 10);
  size_t size = pages * page_size;
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0);
  unsigned char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (mem == MAP_FAILED) die("mmap");

  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API};
  if (strcmp(mode, "events") == 0) api.features = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP;
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  struct uffdio_register reg = {.range = {.start = (uintptr_t)mem, .len = size}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");

  /* Firecracker's body: one range, whose bytes start at PAGE in the snapshot file. */
  char body[1024];
  if (strcmp(mode, "bad-json") == 0) {
    snprintf(body, sizeof body, "[{\"base_host_virt_addr\": oops");
  } else if (strcmp(mode, "overlap") == 0) {
    snprintf(body, sizeof body,
             "[{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":0%s},"
             "{\"base_host_virt_addr\":%lu,\"size\":%lu,\"offset\":0%s}]",
             (unsigned long)(uintptr_t)mem, size, fields, (unsigned long)(uintptr_t)mem + page_size, page_size, fields);
  } else {
    snprintf(body, sizeof body, "[{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":%d%s}]",
             (unsigned long)(uintptr_t)mem, size, PAGE, fields);
  }
  int sock = connect_to(argv[1]);
  send_handshake_fd(sock, body, strcmp(mode, "no-fd") == 0 ? -1 : uffd);

  if (strcmp(mode, "serve") == 0) {
    size_t wrong = 0;
    for (size_t p = 0; p < size / PAGE; p++) {
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
