// Shared by argmax.comp and argmax_final.comp: the workgroup reduction of
// (key, index) pairs to the pair with the largest key, lowest index among
// equal keys. Keys are order_key of the values, so the result is exact and
// does not depend on the order in which invocations finish.

#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 0) in;

// order_key maps f32 to uint so that a < b ⇔ key(a) < key(b), with -0 equal
// to +0 and NaN below -inf (NaN counts as the smallest value). The NaN test
// is on the bits because fast-math compilers may fold isnan away.
uint order_key(float v) {
	const uint u = floatBitsToUint(v);
	if ((u & 0x7fffffffu) > 0x7f800000u) {
		return 0u;
	}
	if ((u & 0x7fffffffu) == 0u) {
		return 0x80000000u;
	}
	return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

// One slot per subgroup; sized for the smallest possible subgroup.
shared uint part_key[gl_WorkGroupSize.x];
shared uint part_idx[gl_WorkGroupSize.x];
shared uvec2 best;

void subgroup_best(inout uint key, inout uint idx) {
	const uint k = subgroupMax(key);
	idx = subgroupMin(key == k ? idx : 0xffffffffu);
	key = k;
}

// workgroup_best returns the best (key, index) over the workgroup.
uvec2 workgroup_best(uint key, uint idx) {
	subgroup_best(key, idx);
	if (subgroupElect()) {
		part_key[gl_SubgroupID] = key;
		part_idx[gl_SubgroupID] = idx;
	}
	barrier();
	if (gl_SubgroupID == 0) {
		uint k = 0u;
		uint i = 0xffffffffu;
		for (uint s = gl_SubgroupInvocationID; s < gl_NumSubgroups; s += gl_SubgroupSize) {
			if (part_key[s] > k || (part_key[s] == k && part_idx[s] < i)) {
				k = part_key[s];
				i = part_idx[s];
			}
		}
		subgroup_best(k, i);
		if (subgroupElect()) {
			best = uvec2(k, i);
		}
	}
	barrier();
	return best;
}
