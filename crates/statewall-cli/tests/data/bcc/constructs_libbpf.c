// constructs.c in libbpf-style C: the yardstick its translation is compared with.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct key {
	__u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct key);
	__type(value, __u64);
	__uint(max_entries, 256);
} by_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct key);
	__type(value, __u64);
	__uint(max_entries, 256);
} per_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct key);
	__type(value, __u64);
	__uint(max_entries, 256);
} recent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__type(value, __u32);
	__uint(max_entries, 8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} top SEC(".maps");

SEC("tcx/ingress")
int constructs(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + 14 + 20 + 8 > end || *(__be16 *)(data + 12) != bpf_htons(ETH_P_IP) ||
	    *(__u8 *)(data + 14 + 9) != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	struct key k = { .port = bpf_ntohs(*(__be16 *)(data + 14 + 20 + 2)) };
	if (k.port < 9001 || k.port > 9003)
		return TC_ACT_UNSPEC;
	__u64 one = 1, zero = 0;

	__u64 *n = bpf_map_lookup_elem(&by_port, &k);
	if (n) {
		__u64 next = *n + 1;
		bpf_map_update_elem(&by_port, &k, &next, BPF_ANY);
	} else {
		bpf_map_update_elem(&by_port, &k, &one, BPF_ANY);
	}

	__u64 *c = bpf_map_lookup_elem(&per_cpu, &k);
	if (!c) {
		bpf_map_update_elem(&per_cpu, &k, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&per_cpu, &k);
	}
	if (c)
		*c += 1;

	bpf_map_update_elem(&recent, &k, &one, BPF_NOEXIST);
	if (k.port == 9003) {
		struct key gone = { .port = 9001 };
		bpf_map_delete_elem(&recent, &gone);
	}

	bpf_map_push_elem(&ports, &k.port, 0);
	__u32 t;
	if (k.port == 9002)
		bpf_map_pop_elem(&ports, &t);
	if (bpf_map_peek_elem(&ports, &t) == 0) {
		__u32 i = 0;
		__u64 v = t;
		bpf_map_update_elem(&top, &i, &v, BPF_ANY);
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
