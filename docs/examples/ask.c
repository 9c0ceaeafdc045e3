/* Asks the device's cloud AI once through aiesimd (Broker.Ask) with sd-bus and prints the
 * answer and what it cost. The system bus, or DBUS_SYSTEM_BUS_ADDRESS.
 *
 *   cc -o ask docs/examples/ask.c $(pkg-config --cflags --libs libsystemd)
 *   ./ask "What is an eSIM?"
 */
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>

int main(int argc, char **argv) {
    const char *question = argc > 1 ? argv[1] : "Hello!";
    sd_bus *bus = NULL;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    const char *text = NULL;
    int r = sd_bus_open_system(&bus);
    if (r < 0) {
        fprintf(stderr, "cannot connect to the system bus: %s\n", strerror(-r));
        return 1;
    }
    /* Ask(s prompt, a{sv} options) -> (s text, a{sv} usage); options: max_tokens (u). */
    r = sd_bus_call_method(bus, "org.aiesim.AiEsim1", "/org/aiesim/AiEsim1", "org.aiesim.AiEsim1.Broker", "Ask",
                           &error, &reply, "sa{sv}", question, 1, "max_tokens", "u", 32);
    if (r < 0) {
        fprintf(stderr, "%s: %s\n", error.name, error.message);
        sd_bus_error_free(&error);
        sd_bus_unref(bus);
        return 1;
    }
    r = sd_bus_message_read(reply, "s", &text);
    if (r >= 0)
        printf("%s\n", text);
    /* The usage dictionary: print what was charged. */
    r = sd_bus_message_enter_container(reply, 'a', "{sv}");
    while (r > 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
        const char *key = NULL;
        sd_bus_message_read(reply, "s", &key);
        if (strcmp(key, "charged") == 0) {
            uint64_t charged = 0;
            sd_bus_message_read(reply, "v", "t", &charged);
            printf("charged %llu tokens\n", (unsigned long long)charged);
        } else {
            sd_bus_message_skip(reply, "v");
        }
        sd_bus_message_exit_container(reply);
    }
    sd_bus_message_unref(reply);
    sd_bus_unref(bus);
    return r < 0 ? 1 : 0;
}
