// The BCC dialect's constructs that examples/dynmon/bcc/flows.c does not use, on UDP
// packets by destination port; constructs_libbpf.c does the same in libbpf-style C.
#include <uapi/linux/if_ether.h>

struct key {
	u32 port; // host order
};

BPF_HASH(by_port, struct key, u64, 256);
BPF_PERCPU_HASH(per_cpu, struct key, u64, 256);
BPF_TABLE("lru_hash", struct key, u64, recent, 256);
BPF_STACK(ports, u32, 8);
BPF_TABLE_PUBLIC("array", int, u64, top, 1);
BPF_ARRAY(epoch, u64, 1);

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 14 + 20 + 8 > end || *(__be16 *)(data + 12) != bpf_htons(ETH_P_IP) ||
	    *(u8 *)(data + 14 + 9) != IPPROTO_UDP)
		return RX_OK;
	struct key k = { .port = bpf_ntohs(*(__be16 *)(data + 14 + 20 + 2)) };
	if (k.port == 9004)
		return RX_DROP;
	if (k.port < 9001 || k.port > 9003)
		return RX_OK;
	u64 one = 1, zero = 0;

	u64 *n = by_port.lookup(&k);
	if (n) {
		u64 next = *n + 1;
		by_port.update(&k, &next);
	} else {
		by_port.update(&k, &one);
	}

	u64 *c = per_cpu.lookup_or_init(&k, &zero);
	if (c)
		*c += 1;

	recent.insert(&k, &one);
	if (k.port == 9003) {
		struct key gone = { .port = 9001 };
		recent.delete(&gone);
	}

	ports.push(&k.port, 0);
	u32 t;
	if (k.port == 9002)
		ports.pop(&t);
	if (ports.peek(&t) == 0) {
		int i = 0;
		u64 v = t;
		top.update(&i, &v);
	}

	int e = 0;
	u64 now = pcn_get_time_epoch();
	epoch.update(&e, &now);
	pcn_log(ctx, LOG_INFO, "udp to port %u, %u bytes", k.port, md->packet_len);
	return RX_OK;
}
