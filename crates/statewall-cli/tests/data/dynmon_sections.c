// Test program: one object, two programs in libbpf sections statewall must accept, maps
// whose values are nested structs with an enum, and a stack.
//   xdp          counts arriving IPv4 packets per protocol (ingress path)
//   tcx/egress   counts leaving IPv4 packets, pushes their lengths on a stack (egress path)
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

enum where { WHERE_XDP = 1, WHERE_EGRESS = 2 };

struct inner {
	__u32 packets;
	__u32 last_len;
};

struct stat {
	enum where where;
	struct inner in;
	__u8 tag[4]; // a char-like array of bytes: decoded as numbers
	char name[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u8);
	__type(value, struct stat);
	__uint(max_entries, 256);
} by_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__type(value, __u32);
	__uint(max_entries, 128);
} lens SEC(".maps");

// Global variables: .bss (zero) and .data (initialised), read through the maps aya makes
// of those sections.
__u64 xdp_seen = 0;
__u64 spare = 0;
__u64 egress_seen = 5;

static __always_inline int count(void *data, void *end, enum where w)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	__u8 p = ip->protocol;
	__u32 len = bpf_ntohs(ip->tot_len);
	struct stat *s = bpf_map_lookup_elem(&by_proto, &p);
	if (s) {
		__sync_fetch_and_add(&s->in.packets, 1);
		s->in.last_len = len;
	} else {
		struct stat n = { .where = w, .in = { .packets = 1, .last_len = len },
				  .tag = { 1, 2, 3, 4 }, .name = "sw" };
		bpf_map_update_elem(&by_proto, &p, &n, BPF_NOEXIST);
	}
	if (w == WHERE_EGRESS)
		bpf_map_push_elem(&lens, &len, BPF_EXIST);
	return 0;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&xdp_seen, 1);
	count((void *)(long)ctx->data, (void *)(long)ctx->data_end, WHERE_XDP);
	return XDP_PASS;
}

SEC("tcx/egress")
int count_egress(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&egress_seen, 1);
	count((void *)(long)skb->data, (void *)(long)skb->data_end, WHERE_EGRESS);
	return -1; // TCX_NEXT
}

char LICENSE[] SEC("license") = "GPL";
