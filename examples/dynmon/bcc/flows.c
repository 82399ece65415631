// A dynamic monitor in Polycube's BCC dialect (Dynmon's `code`): the same monitor as
// ../c/flows.c, written the Polycube way. statewall translates it into libbpf-style C
// before clang (see it with `statewall dynmon translate examples/dynmon/bcc/flows.c`); a
// Polycube client posts it unchanged to /polycube/v1/dynmon/{name}, with the metric
// configs of ../c/flows.toml.
//
// Counts IPv4 packets and bytes per flow, all packets per CPU, a log2 histogram of packet
// lengths, and keeps the first 64 new flows it sees in a queue.
#include <uapi/linux/udp.h>

// Polycube gives the integer types, ETH_P_*, bpf_htons and the bitfield macros, but no
// protocol headers: a program declares its own.
struct eth_hdr {
	u8 dst[6];
	u8 src[6];
	__be16 proto;
} __attribute__((packed));

struct iphdr {
#if defined(__LITTLE_ENDIAN_BITFIELD)
	u8 ihl:4, version:4;
#else
	u8 version:4, ihl:4;
#endif
	u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	u8 ttl;
	u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
} __attribute__((packed));

struct flow {
	u32 saddr; // the 4 address bytes as they are in the packet
	u32 daddr;
	u16 dport; // the 2 port bytes as they are in the packet
	u8 proto;
	u8 pad;
};

struct counts {
	u64 packets;
	u64 bytes; // IP total length
};

BPF_TABLE("hash", struct flow, struct counts, flows, 10240);
BPF_PERCPU_ARRAY(packets, u64, 1);
// Entry k counts packets shorter than 2^k bytes (and at least 2^(k-1)).
BPF_ARRAY(lengths, u64, 16);
BPF_QUEUE(new_flows, struct flow, 64);

static __always_inline u32 log2_bucket(u32 v)
{
	u32 k = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (v >> i)
			k = i + 1;
	return k > 15 ? 15 : k;
}

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	packets.increment(0);

	struct eth_hdr *eth = data;
	if ((void *)(eth + 1) > end || eth->proto != bpf_htons(ETH_P_IP))
		return RX_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return RX_OK;

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

	u32 len = bpf_ntohs(ip->tot_len);
	lengths.atomic_increment(log2_bucket(len));

	struct counts *c = flows.lookup(&f);
	if (!c) {
		struct counts n = { .packets = 1, .bytes = len };
		// Another CPU may have created it meanwhile: then add to its entry.
		if (flows.insert(&f, &n) == 0) {
			new_flows.push(&f, 0);
			return RX_OK;
		}
		c = flows.lookup(&f);
	}
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, len);
	}
	return RX_OK;
}
