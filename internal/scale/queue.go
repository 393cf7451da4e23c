package scale

// waiter is one request waiting for a slot.
type waiter struct {
	prev, next *waiter
	queued     bool
	ch         chan grant // buffered 1; receives exactly one grant
	start      *startReq  // the start this request caused, while in progress
}

// grant is what a waiter receives: a lease or the error that ends its wait.
type grant struct {
	l   *Lease
	err error
}

// deliver ends the wait of a waiter already taken off the queue. p.mu held.
func (w *waiter) deliver(g grant) {
	unlinkStart(w)
	w.ch <- g
}

// waitQueue is a FIFO of waiters, an intrusive doubly linked list so that a
// waiter giving up leaves in O(1). Bounded by the pool's depth.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) push(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	w.queued = true
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	q.n--
}

// pop removes and returns the oldest waiter; the queue must not be empty.
func (q *waitQueue) pop() *waiter {
	w := q.head
	q.remove(w)
	return w
}
