#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "gateway_tls.h"

// MARK: Errors

/// OpenSSL's reason for the oldest error in the queue, in words ("bad base64 decode"), with the
/// queue emptied; `fallback` when it holds none.
static void take_error(char *error, size_t error_length, const char *fallback) {
    if (error == NULL || error_length == 0) {
        ERR_clear_error();
        return;
    }
    unsigned long code = ERR_get_error();
    const char *reason = code == 0 ? NULL : ERR_reason_error_string(code);
    if (code != 0 && ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE) {
        reason = "no PEM block found";
    }
    snprintf(error, error_length, "%s", reason != NULL ? reason : fallback);
    ERR_clear_error();
}

/// A key with a passphrase: refused instead of prompting on the master's terminal.
static int no_passphrase(char *buffer, int size, int rwflag, void *userdata) {
    (void)buffer, (void)size, (void)rwflag, (void)userdata;
    return -1;
}

// MARK: Certificates

/// The leaf, its chain and the key from PEM bytes; GW_TLS_OK or what is wrong, with the reason.
static int load_pair(const void *certificate, size_t certificate_length, const void *key, size_t key_length,
                     X509 **leaf, STACK_OF(X509) **chain, EVP_PKEY **private_key, char *error, size_t error_length) {
    *leaf = NULL;
    *chain = NULL;
    *private_key = NULL;
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(certificate, (int)certificate_length);
    if (bio == NULL) {
        take_error(error, error_length, "out of memory");
        return GW_TLS_BAD_CERTIFICATE;
    }
    *leaf = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
    if (*leaf == NULL) {
        BIO_free(bio);
        take_error(error, error_length, "not a PEM certificate");
        return GW_TLS_BAD_CERTIFICATE;
    }
    *chain = sk_X509_new_null();
    for (;;) {
        X509 *next = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
        if (next == NULL) break;
        sk_X509_push(*chain, next);
    }
    unsigned long last = ERR_peek_last_error();
    BIO_free(bio);
    if (last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
        // Something after the first certificate that is not one (a truncated chain).
        take_error(error, error_length, "a certificate of the chain does not parse");
        return GW_TLS_BAD_CERTIFICATE;
    }
    ERR_clear_error();

    bio = BIO_new_mem_buf(key, (int)key_length);
    if (bio != NULL) {
        *private_key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
        BIO_free(bio);
    }
    if (*private_key == NULL) {
        take_error(error, error_length, "not a PEM private key");
        if (memmem(key, key_length, "ENCRYPTED", 9) != NULL) {
            snprintf(error, error_length, "an encrypted key (no one can type its passphrase)");
        } else if (memmem(key, key_length, "PRIVATE KEY-----", 16) == NULL) {
            // OpenSSL's own reason here is its decoder's ("unsupported"), which says nothing.
            snprintf(error, error_length, "no PEM private key found");
        }
        return GW_TLS_BAD_KEY;
    }
    if (X509_check_private_key(*leaf, *private_key) != 1) {
        ERR_clear_error();
        snprintf(error, error_length, "the key is not the certificate's");
        return GW_TLS_KEY_MISMATCH;
    }
    return GW_TLS_OK;
}

static void free_pair(X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *private_key) {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(private_key);
}

static int64_t seconds(const ASN1_TIME *time) {
    struct tm parts;
    if (time == NULL || ASN1_TIME_to_tm(time, &parts) != 1) return 0;
    return (int64_t)timegm(&parts);
}

/// Appends `name` (length bytes, no NUL inside) to `info->names`.
static void add_name(gw_tls_certificate_info *info, const unsigned char *name, int length) {
    if (length <= 0 || memchr(name, 0, (size_t)length) != NULL) return;
    size_t used = 0;
    for (int i = 0; i < info->name_count; i++) used += strlen(info->names + used) + 1;
    if (used + (size_t)length + 1 > sizeof(info->names)) return;
    memcpy(info->names + used, name, (size_t)length);
    info->names[used + (size_t)length] = 0;
    info->name_count++;
}

/// The names a client may ask for by SNI: subjectAltName's DNS names, else the subject's CN
/// (RFC 6125 §6.4.4: the CN only when there is no DNS name).
static void collect_names(X509 *leaf, gw_tls_certificate_info *info) {
    info->name_count = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    if (names != NULL) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
            const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
            if (name->type != GEN_DNS) continue;
            add_name(info, ASN1_STRING_get0_data(name->d.dNSName), ASN1_STRING_length(name->d.dNSName));
        }
        GENERAL_NAMES_free(names);
    }
    if (info->name_count > 0) return;
    X509_NAME *subject = X509_get_subject_name(leaf);
    int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (index < 0) return;
    unsigned char *text = NULL;
    int length = ASN1_STRING_to_UTF8(&text, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
    if (length > 0) add_name(info, text, length);
    OPENSSL_free(text);
    ERR_clear_error();
}

int gw_tls_inspect(const void *certificate, size_t certificate_length, const void *key, size_t key_length,
                   gw_tls_certificate_info *info, char *error, size_t error_length) {
    memset(info, 0, sizeof(*info));
    X509 *leaf;
    STACK_OF(X509) *chain;
    EVP_PKEY *private_key;
    int code = load_pair(certificate, certificate_length, key, key_length, &leaf, &chain, &private_key, error,
                         error_length);
    if (leaf != NULL) {
        info->not_before = seconds(X509_get0_notBefore(leaf));
        info->not_after = seconds(X509_get0_notAfter(leaf));
        info->chain_length = chain != NULL ? sk_X509_num(chain) : 0;
        collect_names(leaf, info);
    }
    free_pair(leaf, chain, private_key);
    return code;
}

// MARK: Session tickets

typedef struct gw_ticket_key {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
} gw_ticket_key;

/// The process's ticket keys, the first the current. A mutex, not a lock-free swap: it is held
/// for an 80-byte copy once per handshake, and the writer (a rotation) comes once an hour.
static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static gw_ticket_key ticket_keys[GW_TLS_MAX_TICKET_KEYS];
static size_t ticket_key_count;

void gw_tls_set_ticket_keys(const unsigned char *keys, size_t count) {
    if (count > GW_TLS_MAX_TICKET_KEYS) count = GW_TLS_MAX_TICKET_KEYS;
    pthread_mutex_lock(&ticket_lock);
    OPENSSL_cleanse(ticket_keys, sizeof(ticket_keys));
    for (size_t i = 0; i < count; i++) {
        const unsigned char *key = keys + i * GW_TLS_TICKET_KEY_LENGTH;
        memcpy(ticket_keys[i].name, key, 16);
        memcpy(ticket_keys[i].hmac, key + 16, 32);
        memcpy(ticket_keys[i].aes, key + 48, 32);
    }
    ticket_key_count = count;
    pthread_mutex_unlock(&ticket_lock);
}

/// OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb(3), whose example this
/// follows): encrypt with the current key; decrypt with the key the ticket names. Returns 1
/// (done), 2 (decrypted: issue a new ticket under the current key), 0 (no ticket to issue, or
/// an unknown key: a full handshake), -1 (failure).
///
/// A TLS 1.3 resumption always asks for a new ticket: clients use a TLS 1.3 ticket once (RFC
/// 8446 C.4; OpenSSL's client, wrk's among them, and browsers do), and OpenSSL sends none after
/// a resumption unless told to renew, so every other connection of such a client was a full
/// handshake (as nginx, which renews, never is). A TLS 1.2 client reuses its ticket: renewed
/// only once its key is no longer the current one.
static int ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                      EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int encrypt) {
    gw_ticket_key key;
    int found = -1;
    pthread_mutex_lock(&ticket_lock);
    if (encrypt) {
        if (ticket_key_count > 0) found = 0;
    } else {
        for (size_t i = 0; i < ticket_key_count; i++) {
            if (CRYPTO_memcmp(key_name, ticket_keys[i].name, 16) == 0) {
                found = (int)i;
                break;
            }
        }
    }
    if (found >= 0) key = ticket_keys[found];
    pthread_mutex_unlock(&ticket_lock);
    if (found < 0) return 0;

    int result = (encrypt || (found == 0 && SSL_version(ssl) < TLS1_3_VERSION)) ? 1 : 2;
    if (encrypt) {
        memcpy(key_name, key.name, 16);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1 ||
            !EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key.aes, iv)) {
            result = -1;
        }
    } else if (!EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key.aes, iv)) {
        result = -1;
    }
    if (result > 0) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac, sizeof(key.hmac)),
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        if (!EVP_MAC_CTX_set_params(mac, params)) result = -1;
    }
    OPENSSL_cleanse(&key, sizeof(key));
    return result;
}

// MARK: Servers

typedef struct gw_tls_entry {
    SSL_CTX *context;
    gw_tls_certificate_info names;
} gw_tls_entry;

struct gw_tls_server {
    int min_version;
    long session_lifetime;
    unsigned char *alpn;
    size_t alpn_length;
    gw_tls_entry *entries;
    int count;
};

/// `pattern` matches `name` exactly, or as `*.rest` for one more label (RFC 6125 §6.4.3's
/// left-most wildcard); both case-insensitive.
static int name_matches(const char *pattern, const char *name, int wildcard) {
    if (!wildcard) return strcasecmp(pattern, name) == 0;
    if (pattern[0] != '*' || pattern[1] != '.') return 0;
    const char *dot = strchr(name, '.');
    return dot != NULL && dot != name && strcasecmp(pattern + 1, dot) == 0;
}

static SSL_CTX *context_for(gw_tls_server *server, const char *name) {
    for (int wildcard = 0; wildcard < 2; wildcard++) {
        for (int i = 0; i < server->count; i++) {
            const char *pattern = server->entries[i].names.names;
            for (int n = 0; n < server->entries[i].names.name_count; n++) {
                if (name_matches(pattern, name, wildcard)) return server->entries[i].context;
                pattern += strlen(pattern) + 1;
            }
        }
    }
    return NULL;
}

/// SNI: the certificate whose names match, else the default (the first), as nginx does.
static int select_certificate(SSL *ssl, int *alert, void *argument) {
    (void)alert;
    gw_tls_server *server = argument;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || server->count < 2) return SSL_TLSEXT_ERR_OK;
    SSL_CTX *chosen = context_for(server, name);
    if (chosen != NULL && chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
    return SSL_TLSEXT_ERR_OK;
}

/// ALPN: the server's first protocol the client offers; none in common is a fatal
/// no_application_protocol alert (RFC 7301 §3.2; nginx since 1.21.4).
static int select_protocol(SSL *ssl, const unsigned char **out, unsigned char *out_length, const unsigned char *in,
                           unsigned int in_length, void *argument) {
    (void)ssl;
    gw_tls_server *server = argument;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, out_length, server->alpn, (unsigned int)server->alpn_length, in, in_length) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

gw_tls_server *gw_tls_server_new(int min_version, long session_lifetime, const unsigned char *alpn,
                                 size_t alpn_length, char *error, size_t error_length) {
    gw_tls_server *server = calloc(1, sizeof(*server));
    if (server == NULL || (alpn_length > 0 && (server->alpn = malloc(alpn_length)) == NULL)) {
        free(server);
        snprintf(error, error_length, "out of memory");
        return NULL;
    }
    server->min_version = min_version;
    server->session_lifetime = session_lifetime;
    if (alpn_length > 0) memcpy(server->alpn, alpn, alpn_length);
    server->alpn_length = alpn_length;
    return server;
}

int gw_tls_server_add_certificate(gw_tls_server *server, const void *certificate, size_t certificate_length,
                                  const void *key, size_t key_length, char *error, size_t error_length) {
    X509 *leaf;
    STACK_OF(X509) *chain;
    EVP_PKEY *private_key;
    if (load_pair(certificate, certificate_length, key, key_length, &leaf, &chain, &private_key, error,
                  error_length) != GW_TLS_OK) {
        free_pair(leaf, chain, private_key);
        return -1;
    }
    gw_tls_entry *entries = realloc(server->entries, sizeof(gw_tls_entry) * (size_t)(server->count + 1));
    SSL_CTX *context = entries != NULL ? SSL_CTX_new(TLS_server_method()) : NULL;
    if (entries != NULL) server->entries = entries;
    if (context == NULL || !SSL_CTX_set_min_proto_version(context, server->min_version) ||
        !SSL_CTX_use_certificate(context, leaf) || !SSL_CTX_set1_chain(context, chain) ||
        !SSL_CTX_use_PrivateKey(context, private_key)) {
        take_error(error, error_length, "out of memory");
        SSL_CTX_free(context);
        free_pair(leaf, chain, private_key);
        return -1;
    }
    gw_tls_entry *entry = &server->entries[server->count];
    memset(&entry->names, 0, sizeof(entry->names));
    collect_names(leaf, &entry->names);
    free_pair(leaf, chain, private_key);

    // Renegotiation is a client's way to make the server do handshakes at will; a TCP end
    // without close_notify is how most HTTP clients close, not an attack (responses are framed).
    SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                     SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    // Partial writes and a moving buffer: a nonblocking write that the socket took part of is
    // retried from the connection's output buffer, wherever its bytes are then. Released
    // buffers: an idle keep-alive connection holds no 34 KiB of record buffers (nginx sets it).
    SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    // Read ahead: one read(2) takes every record the socket has, instead of a header then a body.
    SSL_CTX_set_read_ahead(context, 1);
    // No server-side session cache: its entries would be per worker and per generation.
    // Stateless tickets resume instead, on any worker of any generation: their keys are the
    // master's, shared by every worker (gw_tls_set_ticket_keys).
    SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF);
    if (server->session_lifetime > 0) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(context, ticket_key);
        SSL_CTX_set_timeout(context, server->session_lifetime);
    } else {
        // No TLS 1.2 ticket extension, and no TLS 1.3 NewSessionTicket (which OpenSSL would
        // otherwise still send, stateful, for a cache that is off).
        SSL_CTX_set_options(context, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(context, 0);
    }
    SSL_CTX_set_tlsext_servername_callback(context, select_certificate);
    SSL_CTX_set_tlsext_servername_arg(context, server);
    if (server->alpn_length > 0) SSL_CTX_set_alpn_select_cb(context, select_protocol, server);
    entry->context = context;
    server->count++;
    return 0;
}

void gw_tls_server_free(gw_tls_server *server) {
    if (server == NULL) return;
    for (int i = 0; i < server->count; i++) SSL_CTX_free(server->entries[i].context);
    free(server->entries);
    free(server->alpn);
    free(server);
}

// MARK: Clients

struct gw_tls_client {
    SSL_CTX *context;
};

/// Adds every PEM certificate of `pem` to `store` (NULL: only counts them). The count, or -1.
static int add_certificates(X509_STORE *store, const void *pem, size_t pem_length, char *error,
                            size_t error_length) {
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_length);
    if (bio == NULL) {
        take_error(error, error_length, "out of memory");
        return -1;
    }
    int count = 0;
    for (;;) {
        X509 *certificate = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
        if (certificate == NULL) break;
        int added = store == NULL || X509_STORE_add_cert(store, certificate) == 1;
        X509_free(certificate);
        if (!added) {
            BIO_free(bio);
            take_error(error, error_length, "a certificate cannot be added");
            return -1;
        }
        count++;
    }
    unsigned long last = ERR_peek_last_error();
    BIO_free(bio);
    // The end of the file reads as "no start line"; anything else is a certificate cut short.
    int garbage = last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE);
    if (count == 0 || garbage) {
        take_error(error, error_length, count == 0 ? "no PEM certificate found" : "a certificate does not parse");
        return -1;
    }
    ERR_clear_error();
    return count;
}

int gw_tls_count_certificates(const void *pem, size_t pem_length, char *error, size_t error_length) {
    return add_certificates(NULL, pem, pem_length, error, error_length);
}

gw_tls_client *gw_tls_client_new(const void *ca, size_t ca_length, int verify, char *error, size_t error_length) {
    gw_tls_client *client = calloc(1, sizeof(*client));
    SSL_CTX *context = client != NULL ? SSL_CTX_new(TLS_client_method()) : NULL;
    if (context == NULL || !SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION)) {
        take_error(error, error_length, "out of memory");
        SSL_CTX_free(context);
        free(client);
        return NULL;
    }
    client->context = context;
    if (verify) {
        int trusted = ca != NULL ? add_certificates(SSL_CTX_get_cert_store(context), ca, ca_length, error, error_length)
                                 : SSL_CTX_set_default_verify_paths(context);
        if (trusted <= 0) {
            if (ca == NULL) take_error(error, error_length, "the system's certificate store cannot be read");
            gw_tls_client_free(client);
            return NULL;
        }
    }
    SSL_CTX_set_verify(context, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    // As the server side (gw_tls_server_add_certificate): no renegotiation, framed responses
    // need no close_notify, partial writes from a moving buffer, released buffers while idle
    // in the pool, one read(2) for every record the socket has.
    SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(context, 1);
    // HTTP/1.1 is what goes upstream; an upstream that speaks ALPN then knows it.
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(context, http11, sizeof(http11));
    return client;
}

void gw_tls_client_free(gw_tls_client *client) {
    if (client == NULL) return;
    SSL_CTX_free(client->context);
    free(client);
}

// MARK: Connections

struct gw_tls_connection {
    SSL *ssl;
    /// A fatal error happened: OpenSSL forbids anything more on this connection.
    int failed;
};

gw_tls_connection *gw_tls_accept(gw_tls_server *server, int fd) {
    if (server->count == 0) return NULL;
    gw_tls_connection *connection = calloc(1, sizeof(*connection));
    if (connection == NULL) return NULL;
    connection->ssl = SSL_new(server->entries[0].context);
    if (connection->ssl == NULL || !SSL_set_fd(connection->ssl, fd)) {
        SSL_free(connection->ssl);
        free(connection);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(connection->ssl);
    return connection;
}

gw_tls_connection *gw_tls_connect(gw_tls_client *client, int fd, const char *name) {
    gw_tls_connection *connection = calloc(1, sizeof(*connection));
    if (connection == NULL) return NULL;
    connection->ssl = SSL_new(client->context);
    unsigned char address[16];
    int literal = inet_pton(AF_INET, name, address) == 1 || inet_pton(AF_INET6, name, address) == 1;
    // The name to check goes in the connection's verify parameters (SSL_set1_host, or the
    // address for a literal), which verification uses only when SSL_VERIFY_PEER is on.
    int ok = connection->ssl != NULL && SSL_set_fd(connection->ssl, fd) &&
             (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(connection->ssl), name)
                      : SSL_set_tlsext_host_name(connection->ssl, name) && SSL_set1_host(connection->ssl, name));
    if (!ok) {
        SSL_free(connection->ssl);
        free(connection);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(connection->ssl);
    return connection;
}

void gw_tls_free(gw_tls_connection *connection) {
    if (connection == NULL) return;
    SSL_free(connection->ssl);
    free(connection);
}

/// What a call that returned `result` (0 or less) means.
static int outcome(gw_tls_connection *connection, int result) {
    switch (SSL_get_error(connection->ssl, result)) {
    case SSL_ERROR_WANT_READ:
        return GW_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return GW_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return GW_TLS_CLOSED;
    default:
        connection->failed = 1;
        return GW_TLS_FAILED;
    }
}

int gw_tls_handshake(gw_tls_connection *connection) {
    ERR_clear_error();
    int result = SSL_do_handshake(connection->ssl);
    return result == 1 ? 0 : outcome(connection, result);
}

long gw_tls_read(gw_tls_connection *connection, void *buffer, size_t length, int *emptied) {
    size_t total = 0;
    *emptied = 0;
    while (total < length) {
        size_t count = 0;
        ERR_clear_error();
        if (SSL_read_ex(connection->ssl, (char *)buffer + total, length - total, &count)) {
            total += count;
            continue;
        }
        int code = outcome(connection, 0);
        if (total == 0) return code;
        // The bytes first; the same outcome comes again on the next call.
        *emptied = code == GW_TLS_WANT_READ;
        break;
    }
    return (long)total;
}

long gw_tls_write(gw_tls_connection *connection, const void *buffer, size_t length) {
    size_t total = 0;
    while (total < length) {
        size_t count = 0;
        ERR_clear_error();
        if (SSL_write_ex(connection->ssl, (const char *)buffer + total, length - total, &count)) {
            total += count;
            continue;
        }
        int code = outcome(connection, 0);
        if (total == 0) return code;
        break;
    }
    return (long)total;
}

void gw_tls_close_notify(gw_tls_connection *connection) {
    if (connection->failed || !SSL_is_init_finished(connection->ssl)) return;
    ERR_clear_error();
    // 0: sent, the peer's not yet read (we do not wait for it); < 0: the socket is full or
    // gone, and the FIN that follows says as much.
    (void)SSL_shutdown(connection->ssl);
    ERR_clear_error();
}

int gw_tls_resumed(gw_tls_connection *connection) { return SSL_session_reused(connection->ssl); }

const char *gw_tls_alpn(gw_tls_connection *connection) {
    static __thread char text[256];
    const unsigned char *data = NULL;
    unsigned int length = 0;
    SSL_get0_alpn_selected(connection->ssl, &data, &length);
    memcpy(text, data != NULL ? data : (const unsigned char *)"", length);
    text[length] = 0;
    return text;
}

const char *gw_tls_version(gw_tls_connection *connection) { return SSL_get_version(connection->ssl); }

const char *gw_tls_server_name(gw_tls_connection *connection) {
    const char *name = SSL_get_servername(connection->ssl, TLSEXT_NAMETYPE_host_name);
    return name != NULL ? name : "";
}

void gw_tls_failure(gw_tls_connection *connection, char *error, size_t error_length) {
    int saved = errno;
    // Only a client checks its peer here (an upstream's certificate, with `verify` on).
    long verified = SSL_get_verify_result(connection->ssl);
    if (!SSL_is_server(connection->ssl) && (SSL_get_verify_mode(connection->ssl) & SSL_VERIFY_PEER) &&
        verified != X509_V_OK) {
        ERR_clear_error();
        snprintf(error, error_length, "certificate verify failed: %s", X509_verify_cert_error_string(verified));
        return;
    }
    take_error(error, error_length, saved != 0 ? strerror(saved) : "the peer closed during the handshake");
}
