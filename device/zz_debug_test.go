package device

import (
	"log"
	"os"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func init() {
	if os.Getenv("PAHO_DEBUG") != "" {
		mqtt.DEBUG = log.New(os.Stderr, "[DEBUG] ", log.Lmicroseconds)
		mqtt.ERROR = log.New(os.Stderr, "[ERROR] ", log.Lmicroseconds)
		mqtt.WARN = log.New(os.Stderr, "[WARN] ", log.Lmicroseconds)
		mqtt.CRITICAL = log.New(os.Stderr, "[CRIT] ", log.Lmicroseconds)
	}
}
