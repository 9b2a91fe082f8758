package mqtttest

// PID returns the broker's process id, for a benchmark that reads its CPU
// time and resident memory from /proc.
func (m *Mosquitto) PID() int { return m.proc.cmd.Process.Pid }
