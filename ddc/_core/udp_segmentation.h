/* UDP generic segmentation offload (Linux 4.18+): one send hands the kernel up to 64 datagrams of equal
 * size laid end to end (the last may be shorter), and the kernel, or the NIC, cuts them apart. It saves the
 * per-datagram route lookup, header building and buffer accounting of sendmmsg, which on this project's
 * test machine doubled what one core could send.
 *
 * A kernel older than 4.18 ignores the control message and would send one oversized datagram, so the
 * sender probes with getsockopt first; a kernel that knows the option but cannot use it for a route (the
 * segment larger than the path MTU, a device without checksum offload) refuses the send, and the sender
 * goes back to one datagram per message. */
#ifndef DDC_UDP_SEGMENTATION_H
#define DDC_UDP_SEGMENTATION_H

#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* uint64_t words, so the control buffer is aligned for struct cmsghdr */
#define DDC_SEGMENT_CONTROL_WORDS 4
_Static_assert(CMSG_SPACE(sizeof(uint16_t)) <= DDC_SEGMENT_CONTROL_WORDS * sizeof(uint64_t),
               "the UDP_SEGMENT control message does not fit its buffer");

static int ddc_segmentation_supported(int fd) {
    int value = 0;
    socklen_t length = sizeof value;
    return getsockopt(fd, SOL_UDP, UDP_SEGMENT, &value, &length) == 0;
}

static void ddc_segmentation_control(struct msghdr *message, uint64_t *control, uint16_t segment_size) {
    struct cmsghdr *header;
    memset(control, 0, DDC_SEGMENT_CONTROL_WORDS * sizeof(uint64_t));
    message->msg_control = control;
    message->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    header = CMSG_FIRSTHDR(message);
    header->cmsg_level = SOL_UDP;
    header->cmsg_type = UDP_SEGMENT;
    header->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(header), &segment_size, sizeof segment_size);
}

#endif
