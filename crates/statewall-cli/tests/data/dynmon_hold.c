// Test program for swap-on-read: counts UDP packets per source port in `counts` (the
// swapped map) and every packet in `seen` (shared by both copies). Every 256th packet on
// a CPU is held about a hundred microseconds between finding its counter and adding to
// it, so that a read that does not wait for the old copy to finish misses or misplaces
// that packet.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1024);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} seen SEC(".maps");

static long spin(__u32 i, void *ctx)
{
	return 0;
}

SEC("tcx/ingress")
int hold(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	__u32 zero = 0;

	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return TC_ACT_UNSPEC;
	__u32 key = bpf_ntohs(udp->source);
	__u64 *s = bpf_map_lookup_elem(&seen, &zero);
	if (!s)
		return TC_ACT_UNSPEC;
	__u64 *c = bpf_map_lookup_elem(&counts, &key);
	if (!c) {
		__u64 n = 0;
		bpf_map_update_elem(&counts, &key, &n, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&counts, &key);
		if (!c)
			return TC_ACT_UNSPEC;
	}
	*s += 1;
	if ((*s & 255) == 0)
		bpf_loop(50000, spin, NULL, 0);
	__sync_fetch_and_add(c, 1);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
