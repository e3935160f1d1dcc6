package server

// Queue reports how many requests wait for the model and whether one is
// running; safe to call from any goroutine (the live view polls it).
func (s *Server) Queue() (waiting, running int) { return s.queue.depth() }
