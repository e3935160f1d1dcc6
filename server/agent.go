package server

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// HAProxy's agent check (`agent-check agent-port N` on a server line)
// opens a TCP connection, reads one line and closes. The line sets the
// server's state and weight in the balancer without a reload: "up ready
// 60%" while it works (the weight in proportion to its free places, so
// that a busy replica gets fewer new requests), "up drain" from the
// moment it shuts down (no new requests; those running finish), "down"
// while the model loads or after its device failed.

// agentLine is the agent check's answer now.
func (s *Server) agentLine() string {
	switch {
	case s.draining.Load():
		return "up drain\n"
	case !s.Ready():
		return "down\n"
	}
	waiting, running := s.queue.depth()
	places := s.queue.size + s.queue.limit
	free := max(places-waiting-running, 0)
	// 1 % at the least: a weight of 0 would drain the replica, which a
	// full queue should not; the balancer still sends it what others
	// cannot take.
	return fmt.Sprintf("up ready %d%%\n", max(100*free/places, 1))
}

// ServeAgent answers HAProxy's agent checks on ln until ln is closed.
func (s *Server) ServeAgent(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte(s.agentLine()))
		}()
	}
}
