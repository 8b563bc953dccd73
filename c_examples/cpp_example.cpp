// cpp_example.cpp - libmqtt from C++17: an RAII client class and lambdas as callbacks.
//
//   mqtt::Client owns the mqtt_client* (a unique_ptr with mqtt_client_free as deleter);
//   each std::function handler lives in a heap slot whose address is the C callback's
//   user_data, and a static trampoline turns the C call back into the C++ call.
//
// The program subscribes to its own topics, publishes at QoS 0, 1 and 2 and waits for the
// three messages; a condition + priority lambda picks out the "alerts" topic.
//
// Build: c++ -std=c++17 -Wall -Wextra -pedantic -I include cpp_example.cpp
//            -L target/release -lmqtt -pthread -Wl,-rpath,$PWD/target/release
// Usage: cpp_example [host] [port]      (defaults: localhost 1883); exit status 0 on success.
#include <mqtt.h>

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mqtt {

// A failed mqtt_* call.
class Error : public std::runtime_error {
public:
    Error(const std::string &what, int code)
        : std::runtime_error(what + ": " + mqtt_strerror(code)), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

inline int check(int rc, const char *what) {
    if (rc < 0)
        throw Error(what, rc);
    return rc;
}

// A copy of an application message (the C view is valid only during the callback).
struct Message {
    std::string topic;
    std::string payload;
    int qos;
};

inline Message copy_message(const mqtt_message &m) {
    const char *bytes = reinterpret_cast<const char *>(m.payload);
    return Message{m.topic, m.payload_len ? std::string(bytes, m.payload_len) : std::string(),
                   m.qos};
}

class Client {
public:
    using Handler = std::function<void(const mqtt_data &)>;
    using Condition = std::function<bool(const mqtt_data &)>;
    using MessageHandler = std::function<void(const Message &)>;

    Client(const std::string &client_id, bool clean_session)
        : handle_(mqtt_client_new(client_id.c_str(), clean_session)) {
        if (!handle_)
            throw Error("mqtt_client_new", MQTT_ERR_INVALID_ARGUMENT);
    }

    // Movable (slots keep their addresses), not copyable nor assignable. Destruction
    // frees the client first (handle_ is the last member): the loop thread stops before
    // any handler dies.
    Client(Client &&) noexcept = default;
    Client &operator=(Client &&) = delete;
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    // A handler for `command`; with a condition it is specific (highest priority wins).
    void on(mqtt_command command, Handler handler, Condition condition = {}, int priority = 0) {
        auto slot = std::make_unique<Slot>(Slot{std::move(handler), std::move(condition), {}});
        const bool specific = static_cast<bool>(slot->condition);
        check(mqtt_client_on(handle_.get(), command, &Client::call, specific ? &Client::test : nullptr,
                             priority, slot.get()),
              "mqtt_client_on");
        slots_.push_back(std::move(slot));
    }

    // Start the loop thread; `on_message` gets every application message once.
    void loop_start(MessageHandler on_message) {
        auto slot = std::make_unique<Slot>(Slot{{}, {}, std::move(on_message)});
        check(mqtt_client_loop_start(handle_.get(), &Client::call, slot.get()), "loop_start");
        slots_.push_back(std::move(slot));
    }

    void connect(const std::string &host, std::uint16_t port, std::uint16_t keepalive = 30) {
        check(mqtt_client_connect(handle_.get(), host.c_str(), keepalive, port), "connect");
    }

    int subscribe(const std::string &filter, int qos) {
        mqtt_subscription sub{filter.c_str(), qos};
        return check(mqtt_client_subscribe(handle_.get(), &sub, 1), "subscribe");
    }

    int publish(const std::string &topic, const std::string &payload, int qos,
                bool retain = false) {
        return check(mqtt_client_publish(handle_.get(), topic.c_str(), payload.data(),
                                         payload.size(), qos, retain),
                     "publish");
    }

    void disconnect() { check(mqtt_client_disconnect(handle_.get()), "disconnect"); }

    mqtt_client *get() const noexcept { return handle_.get(); }

private:
    struct Slot {
        Handler handler;
        Condition condition;
        MessageHandler on_message;
    };

    // No exception may cross the C boundary: report it and carry on.
    static void call(mqtt_client *, const mqtt_data *data, void *user_data) noexcept {
        auto *slot = static_cast<Slot *>(user_data);
        try {
            if (slot->on_message) {
                if (data->message != nullptr)
                    slot->on_message(copy_message(*data->message));
            } else {
                slot->handler(*data);
            }
        } catch (const std::exception &e) {
            std::fprintf(stderr, "cpp_example: exception in a callback: %s\n", e.what());
        }
    }

    static bool test(const mqtt_data *data, void *user_data) noexcept {
        auto *slot = static_cast<Slot *>(user_data);
        try {
            return slot->condition(*data);
        } catch (...) {
            return false;
        }
    }

    struct Free {
        void operator()(mqtt_client *client) const noexcept { mqtt_client_free(client); }
    };

    std::vector<std::unique_ptr<Slot>> slots_;
    std::unique_ptr<mqtt_client, Free> handle_; // last: destroyed first
};

} // namespace mqtt

namespace {

// What the callbacks saw, shared with main() under a mutex.
struct Inbox {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<mqtt::Message> messages;
    std::vector<std::string> alerts;
    int subacks = 0;
    int disconnects = 0;

    template <class F> void update(F f) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            f();
        }
        changed.notify_all();
    }

    template <class P> bool wait(P pred) {
        std::unique_lock<std::mutex> lock(mutex);
        return changed.wait_for(lock, std::chrono::seconds(10), pred);
    }
};

bool ends_with(const std::string &s, const std::string &suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int run(const std::string &host, std::uint16_t port) {
    const std::string base = "cpp/" + std::to_string(getpid());
    Inbox inbox;
    mqtt::Client client("cpp-example-" + std::to_string(getpid()), true);

    client.on(MQTT_SUBACK, [&](const mqtt_data &) { inbox.update([&] { inbox.subacks++; }); });
    client.on(MQTT_DISCONNECT,
              [&](const mqtt_data &) { inbox.update([&] { inbox.disconnects++; }); });
    // A specific PUBLISH callback: only messages on .../alerts, above loop_start's
    // on_message (priority -1).
    client.on(
        MQTT_PUBLISH,
        [&](const mqtt_data &data) {
            auto message = mqtt::copy_message(*data.message);
            inbox.update([&] { inbox.alerts.push_back(message.payload); });
        },
        [](const mqtt_data &data) {
            return data.message != nullptr && ends_with(data.message->topic, "/alerts");
        },
        10);
    client.loop_start([&](const mqtt::Message &m) {
        inbox.update([&] { inbox.messages.push_back(m); });
    });

    client.connect(host, port);
    client.subscribe(base + "/#", 2);
    if (!inbox.wait([&] { return inbox.subacks == 1; })) {
        std::fprintf(stderr, "cpp_example: no SUBACK\n");
        return 1;
    }
    for (int qos = 0; qos <= 2; qos++)
        client.publish(base + "/qos" + std::to_string(qos), "payload " + std::to_string(qos), qos);
    client.publish(base + "/alerts", "fire", 1);
    if (!inbox.wait([&] { return inbox.messages.size() == 3 && inbox.alerts.size() == 1; })) {
        std::fprintf(stderr, "cpp_example: got %zu messages and %zu alerts\n",
                     inbox.messages.size(), inbox.alerts.size());
        return 1;
    }
    client.disconnect();
    if (!inbox.wait([&] { return inbox.disconnects == 1; })) {
        std::fprintf(stderr, "cpp_example: no DISCONNECT callback\n");
        return 1;
    }

    std::lock_guard<std::mutex> lock(inbox.mutex);
    int failures = 0;
    for (int qos = 0; qos <= 2; qos++) {
        const std::string topic = base + "/qos" + std::to_string(qos);
        bool found = false;
        for (const auto &m : inbox.messages)
            found = found || (m.topic == topic && m.payload == "payload " + std::to_string(qos) &&
                              m.qos == qos);
        std::printf("%s QoS %d message on %s\n", found ? "ok  " : "FAIL", qos, topic.c_str());
        failures += found ? 0 : 1;
    }
    const bool alert_ok = inbox.alerts.front() == "fire";
    std::printf("%s alert through the condition lambda\n", alert_ok ? "ok  " : "FAIL");
    failures += alert_ok ? 0 : 1;
    std::printf("cpp_example: %s\n", failures ? "FAILED" : "all good");
    return failures ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
    const std::string host = argc > 1 ? argv[1] : "localhost";
    const long port = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 1883;
    if (port <= 0 || port > 65535) {
        std::fprintf(stderr, "usage: %s [host] [port]\n", argv[0]);
        return 2;
    }
    try {
        return run(host, static_cast<std::uint16_t>(port));
    } catch (const mqtt::Error &e) {
        std::fprintf(stderr, "cpp_example: %s\n", e.what());
        return 1;
    }
}
