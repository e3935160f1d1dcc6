package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpServer is the http.Server that Serve runs the API on. Headers must
// arrive within ReadTimeout (a connection slower than that is closed:
// net/http cannot answer a request it has not read); the body's own
// deadline is set on the connection by wrap, so that the handler can
// answer 408 (readBody). There
// is deliberately no ReadTimeout or WriteTimeout for the whole request:
// the first would cancel long generations through net/http's background
// read, the second cut long streams, whose events set their own write
// deadlines instead.
func (s *Server) httpServer(base context.Context) *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: s.opt.ReadTimeout,
		IdleTimeout:       s.opt.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// listener wraps ln so that each client address holds at most
// MaxConnsPerIP connections at once, and counts the open connections.
// Without a cap one address could hold every connection the server can
// serve (each one costs a goroutine and up to a body's memory while it
// is read) and turn everyone else away.
func (s *Server) listener(ln net.Listener) net.Listener {
	return &capListener{Listener: ln, max: s.opt.MaxConnsPerIP, per: map[string]int{}, m: s.metrics,
		refusing: make(chan struct{}, maxRefusing)}
}

// maxRefusing bounds the connections being answered 429 at once (each
// for at most refuseLinger); beyond it refused connections are closed
// without an answer.
const (
	maxRefusing  = 16
	refuseLinger = time.Second
)

// tooManyConns is the answer to a connection over the per-address cap,
// sent before its request is read.
var tooManyConns = func() string {
	body, _ := json.Marshal(errorBody{Error: &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "too_many_connections",
		Message: "too many connections from this address: close some and retry (the server's --max-conns-per-ip)"}})
	return fmt.Sprintf("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body)
}()

type capListener struct {
	net.Listener
	max      int // < 0: no cap
	m        *metrics
	refusing chan struct{}

	mu  sync.Mutex
	per map[string]int // open connections by client address
}

// Accept returns the next connection whose address is under the cap;
// the others are refused on the way.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := clientAddr(c.RemoteAddr())
		if l.enter(addr) {
			l.m.connections.Inc()
			return &capConn{Conn: c, release: func() { l.leave(addr) }}, nil
		}
		l.m.connsRefused.Inc()
		l.refuse(c)
	}
}

func (l *capListener) enter(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max >= 0 && l.per[addr] >= l.max {
		return false
	}
	l.per[addr]++
	return true
}

func (l *capListener) leave(addr string) {
	l.mu.Lock()
	if l.per[addr]--; l.per[addr] <= 0 {
		delete(l.per, addr)
	}
	l.mu.Unlock()
	l.m.connections.Dec()
}

// refuse answers c 429 and closes it, off the accept loop. The answer is
// written, the sending side shut, and what the client sent read away for
// a moment before the close, so that the close does not reset the
// connection under the answer before the client reads it.
func (l *capListener) refuse(c net.Conn) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := io.WriteString(c, tooManyConns); err != nil {
			return
		}
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// clientAddr is the address a connection counts against: its IP, or the
// whole address for other networks.
func clientAddr(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}

// capConn gives its place back once, when closed.
type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
