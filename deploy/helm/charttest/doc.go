// Package charttest renders the headinfer Helm chart (../headinfer) with
// Helm's own template engine and decodes every document into the Kubernetes
// API types, unknown fields rejected. It is a module of its own so that Helm
// and the Kubernetes libraries stay out of headinfer's go.mod.
package charttest
