// Every protocol and resource limit of apop, in one place (the popa3d idea).
// Each cites the RFC it comes from; values marked "configurable" are defaults
// that `apop serve` options may change.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace apop::limits {

// RFC 2449 §4: "command lines ... MUST NOT exceed 255 octets, including the
// terminating CRLF". A longer line is rejected whole, never partly executed.
inline constexpr std::size_t kMaxCommandLine = 255;

// RFC 1939 §3: "Each argument may be up to 40 characters long."
inline constexpr std::size_t kMaxArgument = 40;

// RFC 2449 §4: "Keywords ... are 3 or 4 characters" (CAPA tags may be longer,
// but commands are at most 4). Anything longer is an unknown command.
inline constexpr std::size_t kMaxKeyword = 4;

// RFC 2449 §4: response lines MUST NOT exceed 512 octets including CRLF.
inline constexpr std::size_t kMaxResponseLine = 512;

// RFC 1939 §7: the APOP digest is a 16-octet MD5 in hexadecimal (32 chars).
inline constexpr std::size_t kApopDigestHex = 32;

// RFC 1939 §7 / RFC 822 msg-id: our own challenges stay far below this;
// the client refuses anything longer (CVE-2007-1558 hardening).
inline constexpr std::size_t kMaxTimestamp = 256;

// RFC 1939 §7 (UIDL): "unique-id ... consists of one to 70 characters in the
// range 0x21 to 0x7E".
inline constexpr std::size_t kMaxUidl = 70;

// --- `apop fetch` (client) limits ------------------------------------------
// RFC 5322 §2.1.1: lines "MUST be no more than 998 characters"; real mail
// breaks that (unwrapped HTML, base64), so the client accepts message lines
// up to this many octets and treats longer ones as a protocol error.
inline constexpr std::size_t kMaxClientBodyLine = 1024 * 1024;
// Not from an RFC: a fetched message is held in memory once; larger ones (as
// announced by LIST) are left on the server and reported. A server that sends
// more than it announced is lying (protocol error).
inline constexpr std::uint64_t kMaxFetchMessage = 256ull * 1024 * 1024;
// Not from an RFC: messages per fetch session (STAT/LIST/UIDL are held in
// memory); a larger announced maildrop is a protocol error. Real mailboxes
// reach 100k+ messages (Dovecot serves them); a million bounds what a hostile
// server can make the client keep (issue 17). Configurable (`apop fetch` /
// `apop migrate --max-messages`).
inline constexpr std::uint64_t kMaxFetchListing = 1'000'000;
// Not from an RFC: octets of unique-ids kept from one UIDL listing (at most
// kMaxUidl each): 64 MiB holds a million 64-octet UIDLs (Dovecot's default
// UIDLs are 16). Configurable (`--max-listing-bytes`).
inline constexpr std::uint64_t kMaxListingBytes = 64ull * 1024 * 1024;
// RFC 1939 §7: a UIDL listing line is "msg SP unique-id", the message number
// at most 20 digits (64 bits) and the unique-id at most kMaxUidl octets; a
// longer line is refused at once, before the listing is read further.
inline constexpr std::size_t kMaxUidlListingLine = 20 + 1 + kMaxUidl;
// RFC 2449 §5 CAPA: no limit given; the client reads at most this many lines.
inline constexpr std::size_t kMaxCapaLines = 256;
// RFC 2449 §6.3 / RFC 5034 §3 SASL capability: no limit on the number of
// mechanisms; the client keeps at most this many distinct ones.
inline constexpr std::size_t kMaxCapaSaslMechanisms = 64;
// RFC 7677 §4 / RFC 5802 §5.1: at least 4096 iterations; the client refuses
// fewer (weak) and more than this (a server making the client burn CPU).
inline constexpr std::uint32_t kMinScramIterations = 4096;
inline constexpr std::uint32_t kMaxScramIterations = 1'000'000;
// RFC 4954-style SASL lines in POP3 (RFC 5034 §4): a challenge line is a
// response line, but SCRAM/CRAM challenges are short; this bounds them.
inline constexpr std::size_t kMaxSaslLine = 4096;
// RFC 7628 §3.2.2: a rejected OAuth token's error is a JSON object in a SASL
// challenge, so within kMaxSaslLine already; the client decodes at most this
// many octets of it (base64 of kMaxSaslLine) and keeps at most
// kMaxOAuthErrorField octets of each field (RFC 7628 sets no bound; Google's
// and Dovecot's errors are under 200 octets).
inline constexpr std::size_t kMaxOAuthErrorJson = kMaxSaslLine / 4 * 3;
inline constexpr std::size_t kMaxOAuthErrorField = 256;
// Not from an RFC (RFC 2449 PIPELINING): RETR commands in flight at once.
inline constexpr std::size_t kFetchPipelineWindow = 16;
// Not from an RFC: `apop fetch import-config` (client/fetch_import.hpp)
// reads a .fetchmailrc or getmailrc whole; real ones are a few KiB, so a
// larger file is refused rather than parsed. At most this many accounts are
// imported from all files together (more are reported, not written).
inline constexpr std::size_t kMaxImportRcFile = 1024 * 1024;
inline constexpr std::size_t kMaxImportAccounts = 1000;

// --- `apop fetch --config` (many accounts, daemon mode) --------------------
// Not from an RFC: the configuration file is read whole; a larger one is
// refused (a fetchmailrc with hundreds of accounts is a few tens of KiB).
inline constexpr std::size_t kMaxFetchConfigBytes = 1024 * 1024;
// Not from an RFC: accounts in one configuration file.
inline constexpr std::size_t kMaxFetchAccounts = 1000;
// Not from an RFC: an account name is a state file name and a metrics label.
inline constexpr std::size_t kMaxFetchAccountName = 64;
// Not from an RFC: accounts polled at once (max_parallel): the default and
// the largest value accepted (each poll is one thread and one connection).
inline constexpr unsigned kFetchMaxParallelDefault = 4;
inline constexpr unsigned kFetchMaxParallel = 64;
// Not from an RFC: poll_interval's default (fetchmail's usual `set daemon
// 300`), smallest and largest values.
inline constexpr std::chrono::seconds kFetchPollInterval{300};
inline constexpr std::chrono::seconds kFetchMinPollInterval{1};
inline constexpr std::chrono::seconds kFetchMaxPollInterval{7 * 86400};
// Not from an RFC: a failing account waits interval * 2^failures before its
// next poll, at most this long (or its interval, when that is longer), so a
// server that is down for a day is still tried every hour.
inline constexpr std::chrono::seconds kFetchBackoffCap{3600};
// Not from an RFC: every wait between polls is multiplied by a random factor
// in [1 - j, 1 + j], so accounts (and many daemons) do not poll in lockstep.
inline constexpr double kFetchPollJitter = 0.1;
// Not from an RFC: once the daemon is told to stop (SIGTERM), a server that
// sends nothing for this long ends the poll (a timeout, nothing deleted
// that was not stored) instead of after the whole per-operation timeout; a
// transfer still moving goes on, so the message in flight is finished.
inline constexpr std::chrono::seconds kFetchStopGrace{5};
// Not from an RFC: how often a wait on the server checks for that stop.
inline constexpr std::chrono::milliseconds kFetchStopCheck{200};
// Not from an RFC: password_command's standard output is read up to this
// many octets (an OAuth2 access token is a few KiB; a JWT rarely above 16
// KiB); more kills the command and fails the poll.
inline constexpr std::size_t kMaxPasswordCommandOutput = 64 * 1024;
// Not from an RFC: password_command may run this long (a token helper may
// refresh the token over the network); then its process group is killed.
inline constexpr std::chrono::milliseconds kPasswordCommandTimeout{60'000};

// Not from an RFC: bad commands (unknown, wrong state, bad syntax) tolerated
// before the session is closed (Dovecot closes after 20). Configurable.
inline constexpr unsigned kMaxBadCommands = 10;

// Not from an RFC: failed authentications per connection before it is closed.
// Configurable (`--max-auth-failures`).
inline constexpr unsigned kMaxAuthFailures = 3;

// RFC 1939 §3: "an inactivity autologout timer ... MUST be of at least 10
// minutes' duration". Configurable, never below this minimum after login.
inline constexpr std::chrono::seconds kIdleTimeoutTransaction{600};
inline constexpr std::chrono::seconds kMinIdleTimeoutTransaction{600};
// Not from an RFC: before login clients have no state to lose; a short timer
// stops slow clients holding sockets. Configurable.
inline constexpr std::chrono::seconds kIdleTimeoutAuthorization{60};

// Not from an RFC: the chunk of message body produced per step; bounds the
// memory a session holds for RETR/TOP and gives backpressure (a client that
// does not read stalls the writer, and so the producer).
inline constexpr std::size_t kBodyChunk = 64 * 1024;

// Not from an RFC: replies are batched for pipelining (RFC 2449 PIPELINING)
// up to this many bytes before the driver writes them.
inline constexpr std::size_t kOutputFlush = 64 * 1024;

// Not from an RFC: message numbers are 32-bit; a maildrop larger than this is
// served in part. Numbers above it are "no such message".
inline constexpr std::uint64_t kMaxMessages = 0xFFFFFFFFu;

// Not from an RFC: usernames are file names under DATA/mail/, so they are
// short and restricted (see auth/username.hpp).
inline constexpr std::size_t kMaxUsername = 64;

// Not from an RFC: secrets. At least this long unless --allow-weak;
// at most kMaxArgument for APOP/PASS use anyway ... but PASS takes the rest
// of the line (RFC 1939 allows spaces in passwords in practice).
inline constexpr std::size_t kMinSecret = 12;
inline constexpr std::size_t kMaxSecret = 200;
inline constexpr std::size_t kGeneratedSecret = 24;

// Not from an RFC: iovecs per writev(2) call when a Maildir delivery writes
// a message held in parts (store::deliver_parts). POSIX's _XOPEN_IOV_MAX,
// the least IOV_MAX any system has; more parts take more calls.
inline constexpr std::size_t kWritevBatch = 16;

// Not from an RFC: the largest message `apop deliver` accepts (configurable).
inline constexpr std::uint64_t kMaxDeliverSize = 256ull * 1024 * 1024;

// Not from an RFC: the UPDATE journal (store/update_journal.hpp) lists the
// file names removed at one QUIT; 256 MiB holds over 2 million typical
// Maildir names. A larger commit is refused before anything is removed
// (-ERR [SYS/TEMP], the client can delete in several sessions).
inline constexpr std::uint64_t kMaxUpdateJournal = 256ull * 1024 * 1024;
// The Maildir specification (D. J. Bernstein, maildir(5), not an RFC): a file
// in tmp/ not accessed for 36 hours is a leftover of a delivery that died and
// is removed (as Dovecot does).
inline constexpr std::chrono::hours kMaildirTmpMaxAge{36};
// Not from an RFC: tmp/ is scanned for such leftovers at most this often per
// Maildir (Dovecot's MAILDIR_TMP_SCAN_SECS), not at every login; the
// server remembers up to kMaildirTmpScanMemo Maildirs' last scan.
inline constexpr std::chrono::hours kMaildirTmpScanInterval{8};
inline constexpr std::size_t kMaildirTmpScanMemo = 100'000;

// Not from an RFC: Maildir++ quotas (Courier's README.maildirquota, which
// Dovecot's "maildir" quota backend follows). The maildirsize file is
// recalculated from the directory once it reaches 5120 bytes ...
inline constexpr std::size_t kMaildirsizeMaxFile = 5120;
// Not from an RFC: Maildir++ -- ... or, when it says the Maildir is over
// quota, once it was last written 15 minutes ago or more (a stale "full"
// must not bounce mail forever after files were removed behind its back).
inline constexpr std::chrono::minutes kMaildirsizeMaxAge{15};
// Not from an RFC: the most of a maildirsize file read; a larger one is
// recalculated anyway (kMaildirsizeMaxFile), so this only bounds the read.
inline constexpr std::size_t kMaildirsizeMaxRead = 64 * 1024;

// Not from an RFC (client, `apop fetch --to mbox:`): how long to wait for the
// mbox dotlock and fcntl lock before giving up with a temporary error (the
// message stays on the server). Postfix local(8) waits about as long.
inline constexpr std::chrono::milliseconds kMboxLockTimeout{60'000};
// Not from an RFC (server, mbox maildrops): how long a login or a QUIT waits
// for the mbox dotlock and fcntl lock before giving up with -ERR [IN-USE]
// (login) or [SYS/TEMP] (QUIT: nothing deleted). Short, because the wait
// happens on an authentication thread and the client is waiting.
inline constexpr std::chrono::milliseconds kMboxSessionLockTimeout{10'000};
// Not from an RFC: a dotlock (FILE.lock) older than this is stale and removed
// (procmail and Postfix use about 5 minutes).
inline constexpr std::chrono::seconds kDotlockStale{300};
// Not from an RFC (client, `--to mda:`): an MDA still running after this long
// is killed and the message kept on the server.
inline constexpr std::chrono::milliseconds kMdaTimeout{600'000};

// --- `apop fetch --to lmtp:/smtp:` (client/handoff.hpp) ---------------------
// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including the
// reply code and CRLF. We accept four times that (some servers overshoot with
// long texts); a longer line is a protocol error and the connection is
// dropped (the message stays on the POP3 server).
inline constexpr std::size_t kMaxSmtpReplyLine = 2048;
// Not from an RFC (RFC 5321 §4.5.3.1 sets no line count): lines of one
// multi-line reply (an EHLO keyword list has a few dozen at most); more is a
// protocol error. Together with kMaxSmtpReplyLine this bounds a reply's size.
inline constexpr std::size_t kMaxSmtpReplyLines = 100;
// RFC 5321 §4.5.3.1.3: a reverse- or forward-path is at most 256 octets
// (with its angle brackets); a longer --deliver-to is refused, a longer
// envelope sender is sent as the null path <> (and never bounced to).
inline constexpr std::size_t kMaxSmtpPath = 256;
// RFC 5321 §4.5.3.2: the client's timeouts. 5 minutes for the greeting and
// for MAIL, RCPT and the other commands (§4.5.3.2.1-3), 10 minutes for the
// reply to the final "." (§4.5.3.2.6); each block of message data must be
// taken within 3 minutes (§4.5.3.2.5). A timeout is a temporary failure.
inline constexpr std::chrono::milliseconds kSmtpCommandTimeout{300'000};
inline constexpr std::chrono::milliseconds kSmtpDataBlockTimeout{180'000};
inline constexpr std::chrono::milliseconds kSmtpFinalDotTimeout{600'000};
// Not from an RFC: connecting to the LMTP/SMTP server (all addresses of the
// host together). Unreachable means temporary failure, mail stays on the server.
inline constexpr std::chrono::milliseconds kSmtpConnectTimeout{60'000};
// Not from an RFC: how long the destructor waits for the reply to QUIT
// (RFC 5321 §4.1.1.10 wants it read, but nothing depends on it any more).
inline constexpr std::chrono::milliseconds kSmtpQuitTimeout{10'000};
// Not from an RFC: after a failed connection (refused, timeout, no greeting)
// the following messages of the run fail at once for this long instead of
// each waiting for its own connect timeout; they stay on the POP3 server.
inline constexpr std::chrono::milliseconds kSmtpReconnectBackoff{30'000};
// Not from an RFC: `apop fetch --config` keeps an LMTP/SMTP connection a
// finished account leaves for the next account's messages (client/
// handoff.hpp HandoffPool), at most this many per destination, each for at
// most this long idle; a pooled connection also ends when the poll round
// does (QUIT): no connection stays open between polls.
inline constexpr std::size_t kHandoffPoolPerTarget = 16;
inline constexpr std::chrono::milliseconds kHandoffPoolIdle{10'000};
// Not from an RFC: how much of a rejected message's header a bounce (DSN,
// RFC 3464 text/rfc822-headers part) carries; the rest is cut at a line end.
inline constexpr std::size_t kMaxBounceHeaders = 64 * 1024;

// --- `apop serve --lmtp-listen` (net/lmtp_session.hpp, RFC 2033) ----------
// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF;
// §4.5.3.1.6 lets service extensions raise it, and MAIL carries SIZE= and
// BODY= here, so four times that is allowed. A longer line is answered
// "500 5.5.2" and discarded up to its end.
inline constexpr std::size_t kMaxLmtpCommandLine = 2048;
// RFC 5321 §4.5.3.1.3: a reverse- or forward-path is at most 256 octets.
inline constexpr std::size_t kMaxLmtpPath = 256;
// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients; more
// get "452 4.5.3" (the client sends them in a later transaction).
inline constexpr unsigned kLmtpMaxRecipients = 100;
// Not from an RFC: the largest message accepted (advertised as SIZE, RFC
// 1870), as `apop deliver`'s default. A bigger one is read to its end and
// refused per recipient with "552 5.3.4"; the session's buffer never holds
// more than this plus one line.
inline constexpr std::uint64_t kLmtpMaxMessageSize = 64ull * 1024 * 1024;
// Not from an RFC: a message line (RFC 5321 §4.5.3.1.6 requires accepting
// 1000 octets) is not cut, but the session takes a line's bytes into the
// message in pieces of at most this size, so an unterminated line never
// grows its input buffer beyond it.
inline constexpr std::size_t kLmtpDataChunk = 64 * 1024;
// Not from an RFC: bad commands (unknown, out of sequence, bad syntax) before
// the session answers "421 4.7.0" and closes.
inline constexpr unsigned kLmtpMaxBadCommands = 20;
// Not from an RFC: concurrent LMTP connections (each may hold a message of
// up to SIZE in memory). Postfix opens at most 20 per destination by default
// (default_destination_concurrency_limit); more get "421 4.3.2" at once.
inline constexpr unsigned kLmtpMaxConnections = 64;
// Not from an RFC: an LMTP recipient's lookup (account, mail location,
// quota limits) is reused for this long: RCPT and the delivery after DATA,
// and the next messages to the same account, cost one question to the auth
// process instead of one each. A change to the account (deleted, moved,
// new limits) reaches deliveries at most this late.
inline constexpr std::chrono::milliseconds kLmtpLookupCacheTtl{1000};
// Not from an RFC: accounts whose lookup is held at once; when full, the
// cache is emptied (a burst to more accounts only costs their lookups).
inline constexpr std::size_t kLmtpLookupCacheEntries = 4096;
// RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next
// command; the same for each block of message data (the client's own data
// block timeout, §4.5.3.2.5, is 3 minutes, so 5 leaves it the first word).
inline constexpr std::chrono::milliseconds kLmtpServerTimeout{300'000};

// --- failed-login defence (auth/throttle.hpp) and connection limits --------
// Not from an RFC: each failed login delays its reply, doubling from the base
// up to the maximum (Dovecot's auth penalty: 2 s doubling up to 15 s).
// Configurable (`--auth-failure-delay-ms`, `--auth-failure-delay-max-ms`).
inline constexpr std::chrono::milliseconds kAuthFailureDelay{2000};
inline constexpr std::chrono::milliseconds kAuthFailureDelayMax{15000};
// Not from an RFC: this many failed logins from one client address within the
// window block that address for the block duration (fail2ban's defaults are
// 5 in 10 min for 10 min). Configurable (`--block-after-failures`,
// `--block-window`, `--block-duration`).
inline constexpr unsigned kBlockAfterFailures = 10;
inline constexpr std::chrono::seconds kBlockWindow{600};
inline constexpr std::chrono::seconds kBlockDuration{900};
// Not from an RFC: how long a successful (user, address) pair exempts that
// address from the user's failure count (in memory, lost on restart).
inline constexpr std::chrono::hours kGoodLoginMemory{30 * 24};
// Not from an RFC: entries (addresses, users, good pairs) the in-memory
// failure tracker keeps; the least recently used are dropped beyond it, so an
// attacker cycling through names or addresses cannot exhaust memory.
inline constexpr std::size_t kThrottleTrackedEntries = 100'000;
// Not from an RFC: concurrent connections in total and per client address
// (Dovecot: default_client_limit 1000; Postfix smtpd_client_connection_count_limit 50).
// Configurable (`--max-connections`, `--max-connections-per-address`).
inline constexpr unsigned kMaxConnections = 1000;
inline constexpr unsigned kMaxConnectionsPerAddress = 50;
// RFC 6177 §2 and RFC 7421: one IPv6 subnet, and often one host, gets a
// whole /64 (a site /48 or /56), so counting IPv6 clients per address would
// multiply an attacker's allowance by 2^64. The per-address connection cap
// and the failed-login defence (counts, blocks, known-good pairs) count an
// IPv6 client by this prefix of its address; IPv4 clients (and IPv4-mapped
// IPv6 ones) per address (net::address_key). Configurable
// (`--ipv6-prefix-length`, kMinIpv6PrefixLength..128; 128 = per address).
inline constexpr unsigned kIpv6PrefixLength = 64;
// Not from an RFC: below a /32 (the smallest block an RIR allocates to an
// ISP) one count would cover a whole provider's customers.
inline constexpr unsigned kMinIpv6PrefixLength = 32;
// Not from an RFC (RFC 8314 §3.2 has the client start TLS at once on an
// implicit-TLS port, so a plaintext line is garbage to it): a connection over
// a limit on such a listener is told so inside TLS, after a handshake that
// must finish within this long (or the login timeout, when shorter); at most
// kMaxTlsRefusals such handshakes run at once, and beyond that a refused
// connection is closed without a word. Neither counts against the limits.
inline constexpr std::chrono::seconds kTlsRefusalTimeout{10};
inline constexpr unsigned kMaxTlsRefusals = 64;
// Not from an RFC: concurrent logged-in sessions per user (Dovecot:
// mail_max_userip_connections 10). A Maildrop is locked by one session
// anyway (RFC 1939 §4: "exclusive-access lock"), so with Maildir only 1 matters.
// Configurable (`--max-sessions-per-user`).
inline constexpr unsigned kMaxSessionsPerUser = 10;
// Not from an RFC: a client must finish logging in within this long of
// connecting, however it trickles bytes (Dovecot's login processes: 3 min).
// Configurable (`--login-deadline`).
inline constexpr std::chrono::seconds kLoginDeadline{180};

// --- RFC 2449 LOGIN-DELAY / EXPIRE (apop serve login_delay/expire, and per
// account with `apop user policy`) --------------------------------------------
// RFC 2449 §6.5 gives LOGIN-DELAY in seconds without a bound; not from an
// RFC: at most a day between logins (a larger value is a typo, not a policy).
inline constexpr std::uint32_t kMaxLoginDelay = 86400;
// RFC 2449 §6.7 gives EXPIRE in days without a bound; not from an RFC: at
// most 100 years (keeps days * 86400 far from overflow).
inline constexpr std::int64_t kMaxExpireDays = 36500;

// Not from an RFC: the UIDL map file (MAILDIR/apop-uidl, store/uidl_map.hpp)
// and an imported dovecot-uidlist are read whole at session start; a larger
// file is refused (about a million entries).
inline constexpr std::uint64_t kMaxUidlMapFile = 128ull * 1024 * 1024;
// Not from an RFC: Maildir base names in the map are file names (NAME_MAX).
inline constexpr std::size_t kMaxMaildirBaseName = 255;

// Not from an RFC: imported crypt(3) hashes (auth/foreign_hash.hpp) are
// verified at every USER/PASS, PLAIN and LOGIN login until upgraded, on the
// auth thread pool, so each guess costs the server one check: a hash above
// these caps is refused at import (with the reason) and never verified at
// login (issue 17 item 8). The budget is about 200 ms of one core per check
// at most; measured on the reference machine (docs/security.md): bcrypt cost
// 12 about 200 ms (14: 790 ms), SHA-crypt 300,000 rounds about 90-100 ms
// (500,000: 170 ms), yescrypt N = 2^14, r = 32 (64 MiB) about 70-80 ms and
// scrypt $7$ N = 2^14, r = 32, p = 1 about 140 ms. Dovecot's defaults are
// far below: SHA-crypt 5000 rounds, bcrypt cost 5, yescrypt N = 2^12, r = 32.
inline constexpr std::uint64_t kMaxImportedShaCryptRounds = 300'000;
inline constexpr unsigned kMaxImportedBcryptCost = 12;
// yescrypt ($y$, $gy$) and scrypt ($7$): 128 * r * N (* p for scrypt) bytes,
// which bounds both the memory of one check and its time.
inline constexpr std::uint64_t kMaxImportedScryptWork = 64ull << 20;
// --- PROXY protocol (HAProxy's proxy-protocol.txt, v1 and v2; net/proxy_protocol.hpp)
// proxy-protocol.txt §2.1: a v1 header is at most 107 bytes with its CRLF.
inline constexpr std::size_t kProxyV1MaxHeader = 107;
// proxy-protocol.txt §2.2 allows a v2 header of 16 + 65535 bytes; not from
// the spec: TLVs beyond this are refused (HAProxy's own ones are far smaller).
inline constexpr std::size_t kProxyV2MaxHeader = 16 + 4096;
// Not from the spec: a trusted proxy sends its header at once on connect;
// one that has not within this long is dropped (HAProxy: it never waits).
inline constexpr std::chrono::seconds kProxyHeaderTimeout{5};

// --- shared state in PostgreSQL (pg/) --------------------------------------
// Not from an RFC: connections a server opens to PostgreSQL for the account
// store and the shared failed-login state (besides the lock connection); a
// caller waiting longer than kPgAcquireTimeout for one gets a temporary error.
inline constexpr unsigned kPgPoolSize = 4;
inline constexpr std::chrono::milliseconds kPgAcquireTimeout{5000};
// Not from an RFC: libpq connect_timeout (seconds) when the URL sets none.
inline constexpr unsigned kPgConnectTimeout = 5;

// Not from an RFC: how long the auth-userdb socket (ipc/userdb.hpp) waits
// for a connected client's one request before closing it (one thread
// answers, so a silent client delays the others at most this long); and how
// long `apop deliver` waits for the answer (the MTA retries on failure).
inline constexpr std::chrono::milliseconds kUserdbRequestTimeout{2000};
inline constexpr std::chrono::milliseconds kUserdbReplyTimeout{10'000};

// Not from an RFC: listeners (--listen and --tls-listen together) one
// server serves. The metrics rows have a fixed size so that the workers of a
// multi-process server can share them in one mapping (net/metrics_table.hpp);
// a configuration with more is refused at start.
inline constexpr unsigned kMaxListeners = 32;

// --- IPC between a network worker and the auth process (src/ipc, issue 19) --
// Not from an RFC: one message (one SOCK_SEQPACKET packet) is at most this
// many bytes, header included. Every field has its own bound below it (a
// client's string: kMaxCommandLine, since one command line carries it; a
// challenge: kMaxResponseLine), so the largest legitimate message (a SASL
// reply with a challenge, a user, a credential name and a mail location) is
// about 3.2 KiB; anything longer is a protocol violation and the channel is
// closed.
inline constexpr std::size_t kMaxIpcMessage = 4096;
// Not from an RFC: an account's mail location travels in a login's reply;
// a longer one fails the login as temporary (a path under PATH_MAX's 4096 in
// practice is far shorter).
inline constexpr std::size_t kMaxIpcMailLocation = 2048;
// Not from an RFC: the client address key (net::address_key: an IPv4
// address, or an IPv6 prefix "x:x:...::/64", INET6_ADDRSTRLEN + "/128",
// perhaps with a "%zone" of up to IFNAMSIZ): a worker cuts a longer one to
// this (it only names the address for the failed-login counts).
inline constexpr std::size_t kMaxIpcAddress = 128;
// Not from an RFC: requests per second one worker may send to the auth
// process (a token bucket: this rate, this burst); excess requests are
// answered "rate limited" and the worker's login fails as [SYS/TEMP]. Above
// what one worker's core can ask for (bench test 1: 5,747 APOP+STAT
// sessions/s on the reference machine, two requests each -- verify_apop and
// record_login), with room for faster cores; it bounds the auth process's
// CPU a compromised worker can take from the others.
inline constexpr unsigned kIpcRequestRate = 50'000;
inline constexpr unsigned kIpcRequestBurst = 100'000;
// Not from an RFC: failed credential checks per second of one worker (a
// token bucket); when spent, the worker's verify and SASL requests are
// answered "rate limited" until it refills. The failure delays
// (kAuthFailureDelay) are awaited by the worker, so a compromised worker
// would skip them: this bounds its password guessing. An honest worker
// stays below it: every failure delays that connection's next reply by at
// least kAuthFailureDelay, so kMaxConnections connections fail at most 500
// times a second.
inline constexpr unsigned kIpcFailureRate = 1000;
inline constexpr unsigned kIpcFailureBurst = 2000;
// Not from an RFC: SASL exchanges one worker may have in flight at the auth
// process; an idle one expires after the login deadline (kLoginDeadline).
inline constexpr std::size_t kIpcMaxSaslExchanges = 256;
// Not from an RFC: successful logins of one worker awaiting their
// record_login (the auth process records a login only for a user that just
// logged in through that worker, so a compromised worker cannot move other
// users' last-login times and so their RFC 2449 LOGIN-DELAY).
inline constexpr std::size_t kIpcPendingLoginRecords = 1024;
// Not from an RFC: shared (PostgreSQL) maildrop locks the auth process holds
// for one worker at once. An honest worker holds one per logged-in session,
// and its sessions are bounded by max_connections (kMaxConnections unless
// configured: the server raises this bound to max_connections); a
// compromised worker cannot take more. Each lock is an entry in
// PostgreSQL's shared lock table, which every server of the cluster shares
// (max_locks_per_transaction * max_connections: 6,400 entries by default),
// so an unbounded worker could exhaust it for all of them.
inline constexpr std::size_t kIpcMaxMaildropLocks = kMaxConnections;
// Not from an RFC: a worker's login records (record_login: the last-login
// time RFC 2449 LOGIN-DELAY compares with) are not sent one by one: they go
// with the worker's next check to the auth process (net/auth_channel.hpp),
// or after at most kIpcRecordFlush when none comes, or at once when
// kIpcMaxQueuedRecords are waiting (one packet each, sent together). So a user's second login
// within kIpcRecordFlush through another worker may not see the first (LOGIN-DELAY values are
// minutes; a single-process server writes them behind too).
inline constexpr std::chrono::milliseconds kIpcRecordFlush{100};
inline constexpr std::size_t kIpcMaxQueuedRecords = 64;
// Not from an RFC: how long a worker waits for the auth process's answer
// (longer than kPgAcquireTimeout, so a slow PostgreSQL pool answers first);
// then the login fails as [SYS/TEMP].
inline constexpr std::chrono::milliseconds kIpcReplyTimeout{10'000};
// Not from an RFC: APOP checks one worker keeps in flight on its
// asynchronous channel (net/auth_channel.hpp); more fail as [SYS/TEMP] at
// once. Far above what a worker's sessions in AUTHORIZATION ask at a time;
// a burst the socket's send buffer cannot take waits for it to drain.
inline constexpr std::size_t kIpcMaxInFlight = 256;

}  // namespace apop::limits
