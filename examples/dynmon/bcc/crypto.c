// The crypto monitor as a Dynmon program in Polycube's BCC dialect: per session (TCP and
// UDP over IPv4, lower address first), packets and bytes in each direction, the first and
// latest times, and the server. It keeps the same records as statewall's built-in
// `kind = "crypto"` monitor (README: "Monitors"), field for field.
//
// This is the ingress path's code. The egress path's is the same code with the table
// declared as the other path's:
//   BPF_TABLE("extern", struct session_key, struct session_value, sessions, 10000);
// so that both directions count into one table. Read it with swap-on-read.

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

struct l4ports {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	u8 doff;
	u8 flags; // TCP only: FIN 0x01, SYN 0x02, ACK 0x10
} __attribute__((packed));

// Addresses and ports as the packet bytes read as little-endian integers (Polycube's
// encodings).
struct session_key {
	u32 saddr;
	u32 daddr;
	u16 sport;
	u16 dport;
	u8 proto;
};

struct session_value {
	u64 n_packets; // from the key's saddr
	u64 n_packets_reverse;
	u64 n_bytes; // IP total length, from the key's saddr
	u64 n_bytes_reverse;
	u64 start_timestamp; // Unix ns
	u64 alive_timestamp;
	u32 method; // 1 TCP SYN, 2 a port below 1024, 3 the lower port
	u32 server_ip;
};

BPF_TABLE_SHARED("percpu_hash", struct session_key, struct session_value, sessions, 10000);

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 14 > end || *(__be16 *)(data + 12) != bpf_htons(ETH_P_IP))
		return RX_OK;
	struct iphdr *ip = data + 14;
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return RX_OK;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return RX_OK;
	if (bpf_ntohs(ip->frag_off) & 0x1fff)
		return RX_OK;
	struct l4ports *l4 = (void *)ip + ip->ihl * 4;
	if ((void *)l4 + 4 > end)
		return RX_OK;
	u8 flags = 0;
	if (ip->protocol == IPPROTO_TCP) {
		if ((void *)(l4 + 1) > end)
			return RX_OK;
		flags = l4->flags;
	}
	u16 sp = bpf_ntohs(l4->source), dp = bpf_ntohs(l4->dest);

	// The session: the lower address first (as little-endian integers); ports decide
	// between equal addresses.
	bool first = ip->saddr == ip->daddr ? sp <= dp : !(ip->daddr < ip->saddr);
	struct session_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.saddr = first ? ip->saddr : ip->daddr;
	key.daddr = first ? ip->daddr : ip->saddr;
	key.sport = first ? l4->source : l4->dest;
	key.dport = first ? l4->dest : l4->source;
	key.proto = ip->protocol;

	u64 now = pcn_get_time_epoch();
	struct session_value *v = sessions.lookup(&key);
	if (!v) {
		struct session_value zero;
		__builtin_memset(&zero, 0, sizeof(zero));
		// Another CPU may have made it meanwhile: then this CPU's value of it.
		sessions.insert(&key, &zero);
		v = sessions.lookup(&key);
		if (!v)
			return RX_OK;
	}
	if (v->start_timestamp == 0) {
		// The server, first rule that applies: a TCP SYN makes the destination the
		// server (the source with ACK), a port below 1024 its side, else the lower port.
		bool dst;
		if (ip->protocol == IPPROTO_TCP && (flags & 0x02)) {
			dst = !(flags & 0x10);
			v->method = 1;
		} else if (dp < 1024) {
			dst = true;
			v->method = 2;
		} else if (sp < 1024) {
			dst = false;
			v->method = 2;
		} else {
			dst = dp <= sp;
			v->method = 3;
		}
		v->server_ip = dst ? ip->daddr : ip->saddr;
		v->start_timestamp = now;
	}
	u64 bytes = bpf_ntohs(ip->tot_len);
	if (first) {
		v->n_packets += 1;
		v->n_bytes += bytes;
	} else {
		v->n_packets_reverse += 1;
		v->n_bytes_reverse += bytes;
	}
	v->alive_timestamp = now;
	return RX_OK;
}
