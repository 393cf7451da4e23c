// Command noop exits at once: the fork+exec floor.
package main

func main() {}
