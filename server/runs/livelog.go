package runs

// LiveLog is the log file of a task running on this server.
type LiveLog struct {
	Path string
	Done chan struct{} // closed once the log is complete (committed to the store, or none: it wrote none)
}

// live registers a running task's log; the returned func marks it complete.
func (m *Manager) live(taskKey, path string) (done func()) {
	l := &LiveLog{Path: path, Done: make(chan struct{})}
	m.mu.Lock()
	m.logs[taskKey] = l
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		if m.logs[taskKey] == l {
			delete(m.logs, taskKey)
		}
		m.mu.Unlock()
		close(l.Done)
	}
}

// Live returns the log of a task running here, if any.
func (m *Manager) Live(taskKey string) (*LiveLog, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.logs[taskKey]
	return l, ok
}
