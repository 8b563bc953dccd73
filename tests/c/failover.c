/*
 * failover.c - mqtt_client_set_servers from C: argument checks that change
 * nothing, a list whose first entry refuses (the broker answers as entry 1,
 * read from mqtt_data.server_index in the CONNACK callback), URIs copied by
 * the call, and server_index -1 without a list.
 *
 * usage: failover host port [case]
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

static int connacks;
static int last_index = -100;
static int last_error = -100;

static void on_connack(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)user_data;
    pthread_mutex_lock(&t_lock);
    last_index = data->server_index;
    last_error = data->error;
    connacks++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

/* A loopback port that refuses connections: bound, never listening. The
 * socket stays open (so nobody else takes the port) until closed by the caller. */
static int refusing_port(int *fd_out)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    *fd_out = fd;
    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    return ntohs(addr.sin_port);
}

/* `mqtt://<t_host>:<port>` in a fresh heap string. */
static char *broker_uri(int port)
{
    char *uri = malloc(300);
    if (uri != NULL)
        snprintf(uri, 300, "mqtt://%s:%d", t_host, port);
    return uri;
}

static int wait_connack(int before)
{
    return t_wait(&connacks, before + 1, 5000);
}

static void server_index_is_appended(void)
{
    CHECK(offsetof(mqtt_data, server_index) > offsetof(mqtt_data, properties));
done:;
}

static void bad_input_changes_nothing(void)
{
    mqtt_client *client = t_client("fo-args", true);
    char *good = broker_uri(t_port);
    const char *null_entry[2];
    const char *bad_port[2];
    const char *websocket[2];
    const char *latin1[2];
    const char *no_scheme[2];
    const char *list[1];
    int before, index;

    CHECK(client != NULL && good != NULL);
    CHECK_RC(mqtt_client_on(client, MQTT_CONNACK, on_connack, NULL, 0, NULL), MQTT_OK);
    null_entry[0] = good;
    null_entry[1] = NULL;
    bad_port[0] = good;
    bad_port[1] = "mqtt://127.0.0.1:65536";
    websocket[0] = good;
    websocket[1] = "ws://127.0.0.1:8080/mqtt";
    latin1[0] = good;
    latin1[1] = "mqtt://h\xe9te:1883";
    no_scheme[0] = good;
    no_scheme[1] = "127.0.0.1:1883";
    list[0] = good;

    CHECK_RC(mqtt_client_set_servers(NULL, list, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, NULL, 1), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, null_entry, 2), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, bad_port, 2), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, websocket, 2), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, latin1, 2), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, no_scheme, 2), MQTT_ERR_INVALID_ARGUMENT);
    /* None of them set a list: connect still needs a host. */
    CHECK_RC(mqtt_client_connect(client, NULL, 30, 0), MQTT_ERR_INVALID_ARGUMENT);

    /* With a list, failed calls keep it. */
    CHECK_RC(mqtt_client_set_servers(client, list, 1), MQTT_OK);
    CHECK_RC(mqtt_client_set_servers(client, bad_port, 2), MQTT_ERR_INVALID_ARGUMENT);
    CHECK_RC(mqtt_client_set_servers(client, null_entry, 2), MQTT_ERR_INVALID_ARGUMENT);
    before = t_get(&connacks);
    CHECK_RC(mqtt_client_connect(client, NULL, 30, 0), MQTT_OK);
    CHECK(wait_connack(before));
    pthread_mutex_lock(&t_lock);
    index = last_index;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(index, 0);
    CHECK_RC(mqtt_client_disconnect(client), MQTT_OK);
    /* count 0 clears it. */
    CHECK_RC(mqtt_client_set_servers(client, NULL, 0), MQTT_OK);
    CHECK_RC(mqtt_client_connect(client, NULL, 30, 0), MQTT_ERR_INVALID_ARGUMENT);
done:
    mqtt_client_free(client);
    free(good);
}

static void second_server_answers(void)
{
    mqtt_client *client = t_client("fo-walk", true);
    int fd = -1;
    int refusing = refusing_port(&fd);
    char *uris[2];
    int before, index, error;

    uris[0] = broker_uri(refusing);
    uris[1] = broker_uri(t_port);
    CHECK(client != NULL && refusing > 0 && uris[0] != NULL && uris[1] != NULL);
    CHECK_RC(mqtt_client_on(client, MQTT_CONNACK, on_connack, NULL, 0, NULL), MQTT_OK);
    CHECK_RC(mqtt_client_set_servers(client, (const char *const *)uris, 2), MQTT_OK);
    /* The strings are copied: scribble over them and free them. */
    memset(uris[0], 'x', 10);
    memset(uris[1], 'x', 10);
    free(uris[0]);
    free(uris[1]);
    uris[0] = uris[1] = NULL;

    before = t_get(&connacks);
    CHECK_RC(mqtt_client_connect(client, NULL, 30, 0), MQTT_OK);
    CHECK(wait_connack(before));
    pthread_mutex_lock(&t_lock);
    index = last_index;
    error = last_error;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(error, MQTT_OK);
    CHECK_EQ(index, 1);

    /* reconnect needs no host either; the broker answered last and answers again. */
    CHECK_RC(mqtt_client_disconnect(client), MQTT_OK);
    before = t_get(&connacks);
    CHECK_RC(mqtt_client_reconnect(client), MQTT_OK);
    CHECK(wait_connack(before));
    pthread_mutex_lock(&t_lock);
    index = last_index;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(index, 1);
    CHECK_RC(mqtt_client_disconnect(client), MQTT_OK);
done:
    mqtt_client_free(client);
    free(uris[0]);
    free(uris[1]);
    if (fd >= 0)
        close(fd);
}

static void without_a_list_index_is_minus_one(void)
{
    mqtt_client *client = t_client("fo-nolist", true);
    int before, index;

    CHECK(client != NULL);
    CHECK_RC(mqtt_client_on(client, MQTT_CONNACK, on_connack, NULL, 0, NULL), MQTT_OK);
    before = t_get(&connacks);
    CHECK_RC(t_connect(client), MQTT_OK);
    CHECK(wait_connack(before));
    pthread_mutex_lock(&t_lock);
    index = last_index;
    pthread_mutex_unlock(&t_lock);
    CHECK_EQ(index, -1);
    CHECK_RC(mqtt_client_disconnect(client), MQTT_OK);
done:
    mqtt_client_free(client);
}

int main(int argc, char **argv)
{
    const char *only = t_init(argc, argv);

    RUN(server_index_is_appended);
    RUN(bad_input_changes_nothing);
    RUN(second_server_answers);
    RUN(without_a_list_index_is_minus_one);
    return t_finish("failover");
}
