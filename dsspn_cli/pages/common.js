// Shared by dsspn's pages (inlined into each by dsspn_cli/pages/__init__.py:build).
// Names come from users' label sets and trees, so they only ever enter the page as text:
// every element is built here with textContent, never from an HTML string.
"use strict";

const dsspn = (() => {
  /** The page's data: the JSON that dsspn embedded in the element #dsspn-data. */
  function readData() {
    const holder = document.getElementById("dsspn-data");
    const text = holder ? holder.textContent.trim() : "";
    return text ? JSON.parse(text) : null;
  }

  /**
   * An element: el("span", {class: "chip", title: "..."}, "text", child, ...).
   * Attributes are set as attributes (strings), "on" holds event listeners, "style" an
   * object of CSS properties; children are nodes or text (never parsed as HTML).
   */
  function el(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "on") {
        for (const [event, listener] of Object.entries(value)) {
          element.addEventListener(event, listener);
        }
      } else if (key === "style") {
        for (const [property, setting] of Object.entries(value)) {
          element.style.setProperty(property, setting);
        }
      } else {
        element.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  /** A share of 0..1 as a percentage a person reads: 12.3%, 0.04%, <0.01%. */
  function percent(share) {
    if (share <= 0) return "0%";
    if (share < 0.0001) return "<0.01%";
    const value = share * 100;
    return (value < 1 ? value.toFixed(2) : value.toFixed(1)) + "%";
  }

  /** A line at the top of the page (a missing file, no data): visible, not only in the console. */
  function notice(message, kind) {
    const holder = document.getElementById("notice");
    if (!holder) return;
    holder.replaceChildren(el("p", {class: kind || "problem"}, message));
    holder.hidden = false;
  }

  /** Children lists and depths of nodes given with a parent index each (null: the root). */
  function shape(nodes) {
    const children = nodes.map(() => []);
    const depth = new Int32Array(nodes.length);
    const order = [];
    let root = -1;
    nodes.forEach((node, i) => {
      if (node.parent === null || node.parent === undefined) root = i;
      else children[node.parent].push(i);
    });
    // Breadth first from the root: every parent comes before its children in `order`.
    const queue = root >= 0 ? [root] : [];
    for (let head = 0; head < queue.length; head++) {
      const i = queue[head];
      order.push(i);
      for (const child of children[i]) {
        depth[child] = depth[i] + 1;
        queue.push(child);
      }
    }
    return {root, children, depth, order};
  }

  /** The indices of node i's ancestors, the root first (none for the root itself). */
  function ancestors(nodes, i) {
    const path = [];
    for (let p = nodes[i].parent; p !== null && p !== undefined; p = nodes[p].parent) {
      path.unshift(p);
    }
    return path;
  }

  /**
   * From the leaves up: visit(i, parent) for every node but the root, each node after all of
   * the nodes below it (`order` from shape() walked backwards), so that a sum over a node's
   * subtree is complete when it is added to its parent.
   */
  function upward(nodes, order, visit) {
    for (let k = order.length - 1; k > 0; k--) visit(order[k], nodes[order[k]].parent);
  }

  /** Unfold every node above depth `level` and fold the rest: the tree cut at that depth. */
  function unfoldAbove(expanded, depth, level) {
    for (let i = 0; i < expanded.length; i++) expanded[i] = depth[i] < level ? 1 : 0;
  }

  return {readData, el, percent, notice, shape, ancestors, upward, unfoldAbove};
})();
