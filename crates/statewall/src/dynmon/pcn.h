/* statewall: what Polycube gives a Dynmon program in its BCC dialect without includes (the
 * header of every translation; see dynmon/bcc.rs). No protocol header structs: programs
 * declare their own. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
typedef _Bool bool;
#define true 1
#define false 0
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s8 s8;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;
typedef __u8 uint8_t;
typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __u64 uint64_t;
typedef __s8 int8_t;
typedef __s16 int16_t;
typedef __s32 int32_t;
typedef __s64 int64_t;
#ifndef __LITTLE_ENDIAN_BITFIELD
#define __LITTLE_ENDIAN_BITFIELD
#endif
#define ETH_P_LOOP 0x0060
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021AD 0x88A8
#define ETH_P_MPLS_UC 0x8847
#define ETH_P_MPLS_MC 0x8848
#define ETH_P_LLDP 0x88CC
#define ETH_P_ALL 0x0003
#define ETH_ALEN 6
#define ETH_HLEN 14
#define CTXTYPE @CTXTYPE@
#define POLYCUBE_PROGRAM_TYPE @POLYCUBE_PROGRAM_TYPE@
enum { RX_OK, RX_REDIRECT, RX_DROP, RX_RECIRCULATE, RX_ERROR };
struct pkt_metadata {
	u16 cube_id;
	u16 in_port;
	u32 packet_len;
	u32 traffic_class;
	u16 reason;
	u32 md[3];
} __attribute__((packed));
enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERR, LOG_CRITICAL };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_RDONLY_PROG);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} __pcn_epoch SEC(".maps");
static __always_inline __u64 pcn_get_time_epoch(void)
{
	__u32 zero = 0;
	__u64 *off = bpf_map_lookup_elem(&__pcn_epoch, &zero);
	return bpf_ktime_get_ns() + (off ? *off : 0);
}
/* pcn_log: a record in __pcn_log, which the daemon writes to its log; at most
 * PCN_LOG_PER_SEC a second per CPU (more are dropped: a flood cannot flood the log). */
#define PCN_LOG_PER_SEC 16
struct __pcn_log_rec {
	__u32 level;
	__s32 len;
	char msg[120];
};
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} __pcn_log SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64[2]);
	__uint(max_entries, 1);
} __pcn_log_rate SEC(".maps");
static __always_inline int __pcn_log_allowed(void)
{
	__u32 zero = 0;
	__u64 *r = bpf_map_lookup_elem(&__pcn_log_rate, &zero);
	if (!r)
		return 0;
	__u64 sec = bpf_ktime_get_ns() / 1000000000;
	if (r[0] != sec) {
		r[0] = sec;
		r[1] = 0;
	}
	return ++r[1] <= PCN_LOG_PER_SEC;
}
#define pcn_log(__pcn_ctx, __pcn_level, __pcn_fmt, args...) ({ \
	if (__pcn_log_allowed()) { \
		struct __pcn_log_rec *__r = bpf_ringbuf_reserve(&__pcn_log, sizeof(*__r), 0); \
		if (__r) { \
			__r->level = (__pcn_level); \
			__r->len = BPF_SNPRINTF(__r->msg, sizeof(__r->msg), __pcn_fmt, ##args); \
			bpf_ringbuf_submit(__r, 0); \
		} \
	} })
#define __pcn_lookup_or_init(map, k, init) ({ \
	void *__v = bpf_map_lookup_elem(map, k); \
	if (!__v) { \
		bpf_map_update_elem(map, k, init, BPF_NOEXIST); \
		__v = bpf_map_lookup_elem(map, k); \
	} \
	__v; })
#define __pcn_increment(map, KT, LT, key, inc, atomic) ({ \
	KT __k = (key); \
	LT __z = 0; \
	LT *__v = bpf_map_lookup_elem(map, &__k); \
	if (!__v) { \
		bpf_map_update_elem(map, &__k, &__z, BPF_NOEXIST); \
		__v = bpf_map_lookup_elem(map, &__k); \
	} \
	if (__v) { \
		if (atomic) \
			__sync_fetch_and_add(__v, (inc)); \
		else \
			*__v += (inc); \
	} })
