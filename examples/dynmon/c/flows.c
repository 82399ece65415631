// SPDX-License-Identifier: GPL-2.0
// A statewall dynamic monitor in libbpf-style C: counts IPv4 packets and bytes per flow
// (source, destination, protocol, destination port), all packets per CPU, a log2
// histogram of packet lengths, and keeps the first 64 new flows it sees in a queue.
//
// Load it with its metric declarations (flows.toml):
//   statewall dynmon load flows --interface eth0 examples/dynmon/c/flows.c \
//       --metrics examples/dynmon/c/flows.toml
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Map keys and values are plain structs: statewall decodes them from the object's BTF,
// and a key made only of integers becomes one labelled OpenMetrics series per entry.
struct flow {
	__u32 saddr; // the 4 address bytes as they are in the packet
	__u32 daddr;
	__u16 dport; // the 2 port bytes as they are in the packet
	__u8 proto;
	__u8 pad; // keys must be fully initialised: padding is named and zeroed
};

struct counts {
	__u64 packets;
	__u64 bytes; // IP total length
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow);
	__type(value, struct counts);
	__uint(max_entries, 10240);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} packets SEC(".maps");

// Entry k counts packets shorter than 2^k bytes (and at least 2^(k-1)).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16);
} lengths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__type(value, struct flow);
	__uint(max_entries, 64);
} new_flows SEC(".maps");

static __always_inline __u32 log2_bucket(__u32 v)
{
	__u32 k = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (v >> i)
			k = i + 1;
	return k > 15 ? 15 : k;
}

SEC("tcx/ingress")
int count_flows(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 zero = 0;

	__u64 *all = bpf_map_lookup_elem(&packets, &zero);
	if (all)
		*all += 1;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_UNSPEC;

	struct flow f;
	__builtin_memset(&f, 0, sizeof(f));
	f.saddr = ip->saddr;
	f.daddr = ip->daddr;
	f.proto = ip->protocol;
	if ((ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_TCP) && ip->ihl == 5) {
		struct udphdr *l4 = (void *)(ip + 1);
		if ((void *)(l4 + 1) <= end)
			f.dport = l4->dest;
	}

	__u32 len = bpf_ntohs(ip->tot_len);
	__u32 b = log2_bucket(len);
	__u64 *h = bpf_map_lookup_elem(&lengths, &b);
	if (h)
		__sync_fetch_and_add(h, 1);

	struct counts *c = bpf_map_lookup_elem(&flows, &f);
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, len);
	} else {
		struct counts n = { .packets = 1, .bytes = len };
		// Another CPU may have created it meanwhile: then add to its entry.
		if (bpf_map_update_elem(&flows, &f, &n, BPF_NOEXIST) == 0) {
			bpf_map_push_elem(&new_flows, &f, 0);
		} else {
			c = bpf_map_lookup_elem(&flows, &f);
			if (c) {
				__sync_fetch_and_add(&c->packets, 1);
				__sync_fetch_and_add(&c->bytes, len);
			}
		}
	}
	// TC_ACT_UNSPEC (TCX_NEXT): no verdict of ours.
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
