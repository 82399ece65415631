// The ddos monitor as a Dynmon program in Polycube's BCC dialect: per session (TCP, UDP
// and ICMP over IPv4, lower address first) the features of its first 100 packets, in a
// queue of packed records, and per session its server and packets recorded. It keeps the
// same records as statewall's built-in `kind = "ddos"` monitor (README: "Monitors").
//
// This is the ingress path's code. The egress path's is the same code with both tables
// declared as the other path's:
//   BPF_TABLE("extern", struct session_key, struct session_value, sessions, 1024);
//   BPF_QUEUESTACK("extern", packets, struct features, 102400, 0);

#define N_PACKET_PER_SESSION 100

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

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	u8 doff;
	u8 flags;
	__be16 window;
} __attribute__((packed));

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
} __attribute__((packed));

// Addresses and ports as the packet bytes read as little-endian integers (Polycube's
// encodings); ICMP has no ports (0).
struct session_key {
	u32 saddr;
	u32 daddr;
	u16 sport;
	u16 dport;
	u8 proto;
};

struct session_value {
	u32 server_ip;
	u64 n_packets; // recorded in this window (at most N_PACKET_PER_SESSION)
};

struct features {
	struct session_key id;
	u64 timestamp; // Unix ns
	u16 ipFlagsFrag; // host order
	u8 tcpFlags;
	u16 tcpWin; // host order
	u16 udpSize; // UDP length minus 8
	u8 icmpType;
} __attribute__((packed));

BPF_TABLE_SHARED("hash", struct session_key, struct session_value, sessions, 1024);
BPF_QUEUESTACK_SHARED("queue", packets, struct features, 102400, 0);

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 14 > end || *(__be16 *)(data + 12) != bpf_htons(ETH_P_IP))
		return RX_OK;
	struct iphdr *ip = data + 14;
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return RX_OK;
	u8 proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
		return RX_OK;
	void *l4 = (void *)ip + ip->ihl * 4;
	struct features f;
	__builtin_memset(&f, 0, sizeof(f));
	f.ipFlagsFrag = bpf_ntohs(ip->frag_off);
	__be16 sport = 0, dport = 0;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return RX_OK;
		sport = t->source;
		dport = t->dest;
		f.tcpFlags = t->flags;
		f.tcpWin = bpf_ntohs(t->window);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return RX_OK;
		sport = u->source;
		dport = u->dest;
		u16 len = bpf_ntohs(u->len);
		f.udpSize = len >= 8 ? len - 8 : 0;
	} else {
		if (l4 + 4 > end)
			return RX_OK;
		f.icmpType = *(u8 *)l4;
	}
	u16 sp = bpf_ntohs(sport), dp = bpf_ntohs(dport);

	// The session: the lower address first (as little-endian integers); ports decide
	// between equal addresses.
	bool first = ip->saddr == ip->daddr ? sp <= dp : !(ip->daddr < ip->saddr);
	f.id.saddr = first ? ip->saddr : ip->daddr;
	f.id.daddr = first ? ip->daddr : ip->saddr;
	f.id.sport = first ? sport : dport;
	f.id.dport = first ? dport : sport;
	f.id.proto = proto;

	// A new session's server, first rule that applies: a TCP SYN makes the destination
	// the server (the source with ACK), an ICMP echo request the destination and a reply
	// the source, a port below 1024 its side, else the lower port.
	bool dst;
	if (proto == IPPROTO_TCP && (f.tcpFlags & 0x02))
		dst = !(f.tcpFlags & 0x10);
	else if (proto == IPPROTO_ICMP && (f.icmpType == 8 || f.icmpType == 0))
		dst = f.icmpType == 8;
	else if (dp < 1024)
		dst = true;
	else if (sp < 1024)
		dst = false;
	else
		dst = dp <= sp;
	struct session_value init;
	__builtin_memset(&init, 0, sizeof(init));
	init.server_ip = dst ? ip->daddr : ip->saddr;

	struct session_key key = f.id;
	struct session_value *s = sessions.lookup_or_try_init(&key, &init);
	if (!s)
		return RX_OK;
	// Claimed atomically: both paths and every CPU count into one session.
	if (__sync_fetch_and_add(&s->n_packets, 1) >= N_PACKET_PER_SESSION) {
		__sync_fetch_and_add(&s->n_packets, -1);
		return RX_OK;
	}
	f.timestamp = pcn_get_time_epoch();
	packets.push(&f, 0);
	return RX_OK;
}
