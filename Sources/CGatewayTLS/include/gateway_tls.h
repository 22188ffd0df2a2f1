// TLS for the worker's event loop, over the system's OpenSSL (libssl3 on Debian 12, the library
// Debian's nginx links): the connection's own nonblocking socket is OpenSSL's fd BIO, as in nginx
// (`SSL_set_fd`), so records are read and written with no copy beyond the cipher's. Nothing of
// OpenSSL's headers reaches Swift: contexts and connections are opaque pointers, results are the
// small integers below. See docs/architecture.md, "TLS", for why not swift-nio-ssl.
#ifndef GATEWAYD_TLS_H
#define GATEWAYD_TLS_H

#include <stddef.h>
#include <stdint.h>

/// What a handshake, read or write did, when it did not move bytes (those are counts >= 0).
enum {
    /// Needs the socket readable (the next input edge), then the same call again.
    GW_TLS_WANT_READ = -1,
    /// Needs the socket writable (the next output edge), then the same call again.
    GW_TLS_WANT_WRITE = -2,
    /// The peer closed: close_notify, or the end of the TCP stream without one (most HTTP
    /// clients close that way; OpenSSL's SSL_OP_IGNORE_UNEXPECTED_EOF).
    GW_TLS_CLOSED = -3,
    /// A protocol error (garbage, plaintext, no common cipher) or a socket error: nothing more
    /// may be sent on this connection, not even close_notify.
    GW_TLS_FAILED = -4,
};

/// What `gw_tls_inspect` found wrong, so the caller can word it.
enum {
    GW_TLS_OK = 0,
    GW_TLS_BAD_CERTIFICATE = 1,
    GW_TLS_BAD_KEY = 2,
    GW_TLS_KEY_MISMATCH = 3,
};

/// One certificate file and one key file as the master read them.
typedef struct gw_tls_certificate_info {
    /// Seconds since the epoch (UTC).
    int64_t not_before;
    int64_t not_after;
    /// Certificates in the file after the first (the chain sent with it).
    int chain_length;
    /// The DNS names of subjectAltName, else the subject's CN; each ends with a NUL, in order.
    char names[4096];
    int name_count;
} gw_tls_certificate_info;

/// Parses a PEM certificate (and the chain behind it) and a PEM private key, and checks that the
/// key is the certificate's. Returns GW_TLS_OK or a GW_TLS_BAD_* code with OpenSSL's reason in
/// `error` (NUL-terminated, cut to `error_length`). An encrypted key is refused: there is no one
/// to type its passphrase.
int gw_tls_inspect(const void *certificate, size_t certificate_length, const void *key, size_t key_length,
                   gw_tls_certificate_info *info, char *error, size_t error_length);

/// A listener's TLS: one SSL_CTX per certificate, the first the default, chosen per connection by
/// the client's SNI. Immutable once built, so every loop thread may create connections from it.
typedef struct gw_tls_server gw_tls_server;

/// `min_version`: 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3). `session_lifetime`: how long, in
/// seconds, a session may be resumed from a ticket (the hint clients get); 0 issues no tickets
/// (every handshake a full one). `alpn`: the
/// protocols in wire format (length-prefixed), the server's preference order. NULL with the
/// reason in `error` on failure.
gw_tls_server *gw_tls_server_new(int min_version, long session_lifetime, const unsigned char *alpn,
                                 size_t alpn_length, char *error, size_t error_length);
/// Adds a certificate (checked as `gw_tls_inspect` does). Returns 0, or -1 with the reason in `error`.
int gw_tls_server_add_certificate(gw_tls_server *server, const void *certificate, size_t certificate_length,
                                  const void *key, size_t key_length, char *error, size_t error_length);
void gw_tls_server_free(gw_tls_server *server);

/// Session ticket keys (RFC 5077; TLS 1.3's stateless tickets too): the process's list, used by
/// every server context, set from any thread (the worker's channel reader) while loop threads
/// handshake. Each key is GW_TLS_TICKET_KEY_LENGTH bytes: a 16-byte name, a 32-byte HMAC-SHA256
/// key, a 32-byte AES-256-CBC key, the layout of nginx's 80-byte `ssl_session_ticket_key` files.
/// The first key encrypts new tickets; every key decrypts, and a ticket under any but the first
/// is renewed under the first. No keys: no tickets are issued, and none is accepted.
enum { GW_TLS_TICKET_KEY_LENGTH = 80, GW_TLS_MAX_TICKET_KEYS = 8 };
/// Replaces the list (at most GW_TLS_MAX_TICKET_KEYS; more are ignored); the old keys are wiped.
void gw_tls_set_ticket_keys(const unsigned char *keys, size_t count);
/// TLS to an upstream: one SSL_CTX per upstream, immutable once built. `ca`: PEM certificates
/// to trust (as the master read them), or NULL for the system's store. `verify`: check the
/// chain and the name (gw_tls_connect's `verify_name`); 0 accepts any certificate. NULL with
/// the reason in `error` on failure.
typedef struct gw_tls_client gw_tls_client;
gw_tls_client *gw_tls_client_new(const void *ca, size_t ca_length, int verify, char *error, size_t error_length);
void gw_tls_client_free(gw_tls_client *client);
/// The number of PEM certificates in `pem` (> 0), or -1 with the reason in `error`.
int gw_tls_count_certificates(const void *pem, size_t pem_length, char *error, size_t error_length);

/// One TLS connection on `fd`, server side (the fd stays the caller's: gw_tls_free does not close it).
typedef struct gw_tls_connection gw_tls_connection;

gw_tls_connection *gw_tls_accept(gw_tls_server *server, int fd);
/// One TLS connection on `fd`, client side (the fd stays the caller's). `name`: the host name
/// sent in SNI and checked against the certificate, or an IP literal (checked against its IP
/// addresses; no SNI, RFC 6066 §3 forbids it).
gw_tls_connection *gw_tls_connect(gw_tls_client *client, int fd, const char *name);
void gw_tls_free(gw_tls_connection *connection);

/// 0 when the handshake is over, else a GW_TLS_* code.
int gw_tls_handshake(gw_tls_connection *connection);
/// Reads records until `length` bytes of plaintext are in `buffer` or the socket is empty.
/// Returns the count (> 0; `*emptied` says whether the socket was found empty, so that an
/// edge-triggered caller knows whether to read again before the next edge), or a GW_TLS_* code.
long gw_tls_read(gw_tls_connection *connection, void *buffer, size_t length, int *emptied);
/// Writes records until all of `buffer` went out or the socket is full. Returns the count
/// (which may be short), or a GW_TLS_* code. After a short count or GW_TLS_WANT_WRITE the next
/// call must start with the bytes not yet counted (they may sit anywhere in memory).
long gw_tls_write(gw_tls_connection *connection, const void *buffer, size_t length);
/// Sends close_notify once, if the connection may still send; never waits for the peer's.
void gw_tls_close_notify(gw_tls_connection *connection);
/// The ALPN protocol chosen ("" if none), the version ("TLSv1.3"), the SNI name ("" if none).
const char *gw_tls_alpn(gw_tls_connection *connection);
/// 1 when the finished handshake resumed a session (a ticket), 0 when it was a full one.
int gw_tls_resumed(gw_tls_connection *connection);
const char *gw_tls_version(gw_tls_connection *connection);
const char *gw_tls_server_name(gw_tls_connection *connection);
/// Why the last call failed: the certificate check's reason when it failed ("certificate
/// verify failed: hostname mismatch"), else OpenSSL's error queue's ("" if it says nothing).
void gw_tls_failure(gw_tls_connection *connection, char *error, size_t error_length);

#endif
